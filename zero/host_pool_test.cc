// HostPool: every task runs once whatever the thread count, errors come back to the caller,
// and the chunked element-wise work and sum of squares give the same bits for 1, 2 and 7 threads.
#include "zero/host_pool.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/check.h"
#include "core/rng.h"

using namespace dilatron;

namespace {

// Not a multiple of the chunk size, so the last chunk is short.
constexpr int64_t kN = 5 * kHostChunkElements + 12345;

std::vector<float> random_values(int64_t n, uint64_t stream) {
  CounterRng rng(11, stream);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = static_cast<float>(rng.normal());
  return x;
}

}  // namespace

TEST_CASE("run calls each task once, for any count and thread count, and can run again") {
  for (int threads : {1, 2, 7}) {
    HostPool pool(threads);
    CHECK(pool.threads() == threads);
    for (int64_t count : {0, 1, 3, 100, 1000}) {
      CAPTURE(threads);
      CAPTURE(count);
      std::vector<std::atomic<int>> calls(static_cast<size_t>(count));
      pool.run(count, [&](int64_t i) { calls[static_cast<size_t>(i)]++; });
      bool once = true;
      for (auto& c : calls) once = once && c.load() == 1;
      CHECK(once);
    }
  }
}

TEST_CASE("a task's exception reaches the caller after the run, and the pool still works") {
  HostPool pool(3);
  std::atomic<int> calls{0};
  CHECK_THROWS_WITH_AS(pool.run(50,
                                [&](int64_t i) {
                                  calls++;
                                  if (i == 17) throw std::runtime_error("task 17 failed");
                                }),
                       "task 17 failed", std::runtime_error);
  CHECK(calls.load() == 50);  // the other tasks still ran
  calls = 0;
  pool.run(10, [&](int64_t) { calls++; });
  CHECK(calls.load() == 10);
}

TEST_CASE("a pool of fewer than one thread is an input error naming the key") {
  CHECK_THROWS_WITH_AS(HostPool(0), "zero.host_threads must be >= 1, got 0", InputError);
}

TEST_CASE("auto_host_threads divides the CPUs among the node's ranks, at least 1") {
  const int one = auto_host_threads(1);
  CHECK(one >= 1);
  CHECK(auto_host_threads(2) <= std::max(1, one));
  CHECK(auto_host_threads(100000) == 1);
}

TEST_CASE("host_sum_of_squares: the same bits for 1, 2 and 7 threads, and the exact sum to double rounding") {
  const std::vector<float> x = random_values(kN, 1);
  double want = 0;  // one chain, in index order
  for (float v : x) want += static_cast<double>(v) * v;
  HostPool one(1);
  const double serial = host_sum_of_squares(one, x.data(), kN);
  CHECK(serial == doctest::Approx(want).epsilon(1e-12));
  for (int threads : {2, 7}) {
    HostPool pool(threads);
    for (int repeat = 0; repeat < 3; ++repeat) {
      const double got = host_sum_of_squares(pool, x.data(), kN);
      CHECK(std::memcmp(&got, &serial, sizeof(double)) == 0);
    }
  }
  // Small inputs: one short chunk, every lane layout of the tail.
  for (int64_t n = 0; n < 9; ++n) {
    double exact = 0;
    for (int64_t i = 0; i < n; ++i) exact += static_cast<double>(x[i]) * x[i];
    CHECK(host_sum_of_squares(one, x.data(), n) == doctest::Approx(exact).epsilon(1e-15));
  }
}

TEST_CASE("host_copy, host_fill, host_add and host_scale cover every element") {
  const std::vector<float> a = random_values(kN, 2), b = random_values(kN, 3);
  for (int threads : {1, 2, 7}) {
    CAPTURE(threads);
    HostPool pool(threads);
    std::vector<float> x(static_cast<size_t>(kN), std::nanf(""));
    host_copy(pool, a.data(), kN, x.data());
    CHECK(x == a);
    host_add(pool, b.data(), kN, x.data());
    host_scale(pool, x.data(), kN, 0.5f);
    bool equal = true;
    for (int64_t i = 0; i < kN; ++i) equal = equal && x[i] == (a[i] + b[i]) * 0.5f;
    CHECK(equal);
    host_fill(pool, x.data(), kN, 1.5f);
    CHECK(x == std::vector<float>(static_cast<size_t>(kN), 1.5f));
    host_fill(pool, x.data(), kN, 0.0f);
    CHECK(x == std::vector<float>(static_cast<size_t>(kN), 0.0f));
  }
}
