// CUDA AdamW and sum of squares against the CPU reference, plus bandwidth timings.
// Needs a GPU (tags = ["gpu"]); run it on the device machine as docs/performance.md shows.
#include <doctest/doctest.h>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "core/cuda_timing.h"
#include "core/cuda_check.h"
#include "core/rng.h"
#include "optim/adamw.h"
#include "optim/grad_norm.h"

namespace dilatron {
namespace {

// Elements past n on the device hold NaN: a kernel that writes there or reads them fails.
constexpr int64_t kGuard = 64;

struct DeviceArray {
  float* ptr = nullptr;
  int64_t n = 0;
  explicit DeviceArray(const std::vector<float>& host) : n(static_cast<int64_t>(host.size())) {
    DILATRON_CUDA_CHECK(cudaMalloc(&ptr, (n + kGuard) * sizeof(float)));
    std::vector<float> padded(host);
    padded.resize(n + kGuard, std::numeric_limits<float>::quiet_NaN());
    DILATRON_CUDA_CHECK(cudaMemcpy(ptr, padded.data(), padded.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  // The n values, after checking that the guard is still all NaN.
  std::vector<float> download() const {
    std::vector<float> all(static_cast<size_t>(n + kGuard));
    DILATRON_CUDA_CHECK(cudaMemcpy(all.data(), ptr, all.size() * sizeof(float), cudaMemcpyDeviceToHost));
    for (int64_t i = n; i < n + kGuard; ++i) REQUIRE(std::isnan(all[static_cast<size_t>(i)]));
    all.resize(static_cast<size_t>(n));
    return all;
  }
};

std::vector<float> random_normals(uint64_t seed, uint64_t stream, int64_t n, double scale) {
  CounterRng rng(seed, stream);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& e : x) e = static_cast<float>(scale * rng.normal());
  return x;
}

// max_i |got - want| / max_i |want|: CPU and GPU run the same fp32 formula; they differ only
// where nvcc fuses a multiply-add, a rounding or two per operation, so 1e-6 (about 8 fp32 ulps
// of the largest element) is the bound.
double max_relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, static_cast<double>(std::abs(got[i] - want[i])));
    scale = std::max(scale, static_cast<double>(std::abs(want[i])));
  }
  return scale == 0 ? diff : diff / scale;
}

constexpr double kAdamWTolerance = 1e-6;
const int64_t kSizes[] = {1, 3, 7, 1000, 4099, (1 << 20) + 3};

TEST_CASE("adamw_update_cuda matches adamw_update_cpu over several steps") {
  for (int64_t n : kSizes) {
    for (float weight_decay : {0.0f, 0.1f}) {
      const uint64_t seed = 1000 + static_cast<uint64_t>(n);
      std::vector<float> p = random_normals(seed, 1, n, 1.0);
      // Nonzero starting moments, as mid-training; v must be >= 0.
      std::vector<float> m = random_normals(seed, 2, n, 1e-3);
      std::vector<float> v = random_normals(seed, 3, n, 1e-3);
      for (float& e : v) e = e * e;
      DeviceArray dp(p), dm(m), dv(v);
      for (int64_t t = 1; t <= 4; ++t) {
        const std::vector<float> g = random_normals(seed, 10 + static_cast<uint64_t>(t), n, 0.01);
        DeviceArray dg(g);
        const AdamWStep s{1e-3f, 0.9f, 0.95f, 1e-8f, weight_decay, 100 + t};
        adamw_update_cuda(dp.ptr, dg.ptr, dm.ptr, dv.ptr, n, s, nullptr);
        adamw_update_cpu(p.data(), g.data(), m.data(), v.data(), n, s);
      }
      DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
      const double err_p = max_relative_error(dp.download(), p);
      const double err_m = max_relative_error(dm.download(), m);
      const double err_v = max_relative_error(dv.download(), v);
      std::printf("adamw n=%lld wd=%.1f: max rel error param %.3g m %.3g v %.3g (tolerance %.0e)\n",
                  static_cast<long long>(n), weight_decay, err_p, err_m, err_v, kAdamWTolerance);
      INFO("n = ", n, " weight_decay = ", weight_decay);
      CHECK(err_p <= kAdamWTolerance);
      CHECK(err_m <= kAdamWTolerance);
      CHECK(err_v <= kAdamWTolerance);
    }
  }
}

TEST_CASE("adamw_update_cuda on pointers that are not 16-byte aligned") {
  const int64_t n = 1001;
  std::vector<float> p = random_normals(5, 1, n + 1, 1.0), g = random_normals(5, 2, n + 1, 0.01);
  std::vector<float> m(n + 1, 0.0f), v(n + 1, 0.0f);
  DeviceArray dp(p), dg(g), dm(m), dv(v);
  const AdamWStep s{1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 1};
  adamw_update_cuda(dp.ptr + 1, dg.ptr + 1, dm.ptr + 1, dv.ptr + 1, n, s, nullptr);
  adamw_update_cpu(p.data() + 1, g.data() + 1, m.data() + 1, v.data() + 1, n, s);
  DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
  CHECK(max_relative_error(dp.download(), p) <= kAdamWTolerance);
  CHECK(max_relative_error(dm.download(), m) <= kAdamWTolerance);
}

TEST_CASE("sum_of_squares_cuda matches sum_of_squares_cpu") {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{(1 << 20) + 3},
                    int64_t{(1 << 24) + 5}}) {
    const std::vector<float> x = random_normals(77, static_cast<uint64_t>(n), n, 2.0);
    DeviceArray dx(x);
    const double want = sum_of_squares_cpu(x.data(), n);
    double got = std::numeric_limits<double>::quiet_NaN();
    got = sum_of_squares_cuda(dx.ptr, n, nullptr);
    // Both accumulate in double, in different orders: n * 2^-53 relative at most (~2e-9 at 16M).
    const double err = want == 0 ? std::abs(got) : std::abs(got - want) / want;
    std::printf("sum_of_squares n=%lld: cpu %.17g gpu %.17g rel error %.3g\n", static_cast<long long>(n), want,
                got, err);
    INFO("n = ", n);
    CHECK(err <= 1e-10);
  }
}

TEST_CASE("scale_cuda multiplies every element and nothing past n") {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{(1 << 20) + 3}}) {
    std::vector<float> x = random_normals(31, static_cast<uint64_t>(n), n, 1.0);
    DeviceArray dx(x);
    scale_cuda(dx.ptr, n, 0.37f, nullptr);
    for (float& e : x) e *= 0.37f;
    DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
    INFO("n = ", n);
    CHECK(max_relative_error(dx.download(), x) == 0.0);  // one fp32 multiply each, as on the CPU
  }
}

TEST_CASE("timing: AdamW and sum of squares at n = 64M") {
  const int64_t n = int64_t{64} << 20;
  const std::vector<float> p = random_normals(9, 1, n, 1.0), g = random_normals(9, 2, n, 0.01);
  std::vector<float> v = random_normals(9, 3, n, 1e-3);
  for (float& e : v) e = e * e;
  const std::vector<float> m = random_normals(9, 4, n, 1e-3);
  DeviceArray dp(p), dg(g), dm(m), dv(v);
  int64_t step = 1;
  const double adamw_ms = median_ms(
      [&] {
        adamw_update_cuda(dp.ptr, dg.ptr, dm.ptr, dv.ptr, n, AdamWStep{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, step++},
                          nullptr);
      },
      10, 100);
  // Read p, g, m, v; write p, m, v.
  const double adamw_bytes = 7.0 * 4.0 * static_cast<double>(n);
  double sink = 0;
  const double sos_ms = median_ms([&] { sink += sum_of_squares_cuda(dg.ptr, n, nullptr); }, 10, 100);
  std::printf("TIMING adamw_update_cuda n=%lld: median %.4f ms, %.1f GB/s (28 bytes/element)\n",
              static_cast<long long>(n), adamw_ms, adamw_bytes / (adamw_ms * 1e-3) / 1e9);
  std::printf("TIMING sum_of_squares_cuda n=%lld: median %.4f ms, %.1f GB/s (4 bytes/element, includes the "
              "host copy and sync)\n",
              static_cast<long long>(n), sos_ms, 4.0 * static_cast<double>(n) / (sos_ms * 1e-3) / 1e9);
  CHECK(std::isfinite(sink));
  // The timed steps must have left finite state behind.
  CHECK(std::isfinite(sum_of_squares_cuda(dp.ptr, n, nullptr)));
}

}  // namespace
}  // namespace dilatron

#else
TEST_CASE("optim_gpu_test needs a build with --config=cuda") { FAIL("built without CUDA"); }
#endif
