#include "optim/schedule.h"

#include <doctest/doctest.h>

#include <cmath>

#include "core/check.h"

namespace dilatron {
namespace {

TEST_CASE("lr_at: linear warmup, cosine decay, then held at the floor") {
  const LrSchedule s{6e-4f, 100, 1100, 0.1f};
  const double max_lr = 6e-4, min_lr = 6e-5;
  CHECK(lr_at(s, 0) == doctest::Approx(max_lr / 100).epsilon(1e-6));
  CHECK(lr_at(s, 49) == doctest::Approx(max_lr * 50 / 100).epsilon(1e-6));
  CHECK(lr_at(s, 99) == doctest::Approx(max_lr).epsilon(1e-6));
  CHECK(lr_at(s, 100) == doctest::Approx(max_lr).epsilon(1e-6));
  // Halfway through the decay the cosine factor is 1/2.
  CHECK(lr_at(s, 600) == doctest::Approx((max_lr + min_lr) / 2).epsilon(1e-6));
  // A quarter of the way: (1 + cos(pi/4)) / 2.
  CHECK(lr_at(s, 350) == doctest::Approx(min_lr + (max_lr - min_lr) * (1 + std::cos(M_PI / 4)) / 2).epsilon(1e-6));
  CHECK(lr_at(s, 1100) == doctest::Approx(min_lr).epsilon(1e-6));
  CHECK(lr_at(s, 5000) == doctest::Approx(min_lr).epsilon(1e-6));
}

TEST_CASE("lr_at decreases monotonically after warmup") {
  const LrSchedule s{1e-3f, 10, 200, 0.0f};
  for (int64_t step = 10; step < 200; ++step) CHECK(lr_at(s, step + 1) < lr_at(s, step));
  CHECK(lr_at(s, 200) == 0.0f);
}

TEST_CASE("lr_at without warmup starts at max_lr") {
  CHECK(lr_at(LrSchedule{1e-3f, 0, 100, 0.1f}, 0) == doctest::Approx(1e-3).epsilon(1e-6));
}

TEST_CASE("lr_at rejects a schedule whose warmup outlasts max_steps") {
  CHECK_THROWS_AS(lr_at(LrSchedule{1e-3f, 200, 100, 0.1f}, 0), InputError);
  CHECK_THROWS_AS(lr_at(LrSchedule{1e-3f, 10, 100, 1.5f}, 0), InputError);
}

}  // namespace
}  // namespace dilatron
