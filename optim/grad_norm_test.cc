#include "optim/grad_norm.h"

#include <doctest/doctest.h>

#include <vector>

#include "core/rng.h"

namespace dilatron {
namespace {

TEST_CASE("sum_of_squares_cpu equals a double loop on random data") {
  for (int64_t n : {0, 1, 7, 1000, 100003}) {
    CounterRng rng(7, static_cast<uint64_t>(n));
    std::vector<float> x(static_cast<size_t>(n));
    for (float& e : x) e = static_cast<float>(3.0 * rng.normal());
    long double want = 0;
    for (float e : x) want += static_cast<long double>(e) * e;
    INFO("n = ", n);
    // Double accumulation over n terms: relative error <= n * 2^-53 (~1e-11 at n = 1e5).
    CHECK(sum_of_squares_cpu(x.data(), n) == doctest::Approx(static_cast<double>(want)).epsilon(1e-12));
  }
}

TEST_CASE("sum_of_squares_cpu keeps small terms that fp32 accumulation would lose") {
  // 1 + 2^24 copies of 2^-12 squared (2^-24): in fp32 each addition to 1 rounds away.
  std::vector<float> x(1 + (1 << 24), 0x1p-12f);
  x[0] = 1.0f;
  CHECK(sum_of_squares_cpu(x.data(), static_cast<int64_t>(x.size())) == 2.0);
}

TEST_CASE("clip_coefficient") {
  CHECK(clip_coefficient(0.5, 1.0f) == 1.0f);
  CHECK(clip_coefficient(4.0, 1.0f) == doctest::Approx(0.25).epsilon(1e-6));
  CHECK(clip_coefficient(1.0, 1.0f) == doctest::Approx(1.0 / (1.0 + 1e-6)).epsilon(1e-7));
  CHECK(clip_coefficient(1e9, 0.0f) == 1.0f);
  CHECK(clip_coefficient(1e9, -1.0f) == 1.0f);
}

}  // namespace
}  // namespace dilatron
