// CUDA AdamW (per tensor and segmented) and sum of squares against the CPU reference, plus
// bandwidth timings.
// Needs a GPU (tags = ["gpu"]); run it on the device machine as docs/performance.md shows.
#include <doctest/doctest.h>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "core/cuda_timing.h"
#include "core/cuda_check.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "optim/adamw.h"
#include "optim/grad_norm.h"

namespace dilatron {
namespace {

// Elements past n on the device hold NaN: a kernel that writes there or reads them fails.
constexpr int64_t kGuard = 64;

struct GuardedDeviceArray {
  float* ptr = nullptr;
  int64_t n = 0;
  explicit GuardedDeviceArray(const std::vector<float>& host) : n(static_cast<int64_t>(host.size())) {
    DILATRON_CUDA_CHECK(cudaMalloc(&ptr, (n + kGuard) * sizeof(float)));
    std::vector<float> padded(host);
    padded.resize(n + kGuard, std::numeric_limits<float>::quiet_NaN());
    DILATRON_CUDA_CHECK(cudaMemcpy(ptr, padded.data(), padded.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  ~GuardedDeviceArray() { cudaFree(ptr); }
  GuardedDeviceArray(const GuardedDeviceArray&) = delete;
  GuardedDeviceArray& operator=(const GuardedDeviceArray&) = delete;

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
      GuardedDeviceArray dp(p), dm(m), dv(v);
      for (int64_t t = 1; t <= 4; ++t) {
        const std::vector<float> g = random_normals(seed, 10 + static_cast<uint64_t>(t), n, 0.01);
        GuardedDeviceArray dg(g);
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
  GuardedDeviceArray dp(p), dg(g), dm(m), dv(v);
  const AdamWStep s{1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 1};
  adamw_update_cuda(dp.ptr + 1, dg.ptr + 1, dm.ptr + 1, dv.ptr + 1, n, s, nullptr);
  adamw_update_cpu(p.data() + 1, g.data() + 1, m.data() + 1, v.data() + 1, n, s);
  DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
  CHECK(max_relative_error(dp.download(), p) <= kAdamWTolerance);
  CHECK(max_relative_error(dm.download(), m) <= kAdamWTolerance);
}

// Segments laid out in random order over one flat buffer: gaps of 0 (touching) to 50 elements,
// lengths 1-4, up to 300 or up to 20000 (across chunk cuts), mixed weight decay, and one segment
// of large_length (none if 0) among them. *extent is one past the last segment plus a gap.
std::vector<AdamWSegment> random_segments(uint64_t seed, int small_count, int64_t large_length, int64_t* extent) {
  CounterRng rng(seed, 77);
  std::vector<AdamWSegment> segments;
  int64_t at = static_cast<int64_t>(rng.below(8));
  const int large_at = static_cast<int>(rng.below(static_cast<uint64_t>(small_count) + 1));
  for (int i = 0; i <= small_count; ++i) {
    int64_t length = 0;
    if (i == large_at) {
      length = large_length;
    } else {
      const uint64_t limits[] = {4, 300, 20000};
      length = 1 + static_cast<int64_t>(rng.below(limits[rng.below(3)]));
    }
    if (length == 0) continue;
    segments.push_back({at, length, rng.below(2) == 0});
    at += length + (rng.below(3) == 0 ? 0 : 1 + static_cast<int64_t>(rng.below(50)));
  }
  *extent = at + 1 + static_cast<int64_t>(rng.below(8));
  // The table must not depend on the segments' order.
  for (size_t i = segments.size(); i > 1; --i) std::swap(segments[i - 1], segments[rng.below(i)]);
  return segments;
}

// A quiet NaN with a payload: arithmetic on it gives the canonical NaN, so an element that the
// kernel wrote (or updated from it) no longer has these bits.
constexpr uint32_t kPoisonBits = 0x7fc0deadu;

float poison() {
  float f;
  std::memcpy(&f, &kPoisonBits, sizeof f);
  return f;
}

bool is_poison(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits == kPoisonBits;
}

TEST_CASE("adamw_update_segments_cuda matches adamw_update_cpu per segment and leaves the gaps alone") {
  struct Case {
    uint64_t seed;
    int small_count;
    int64_t large_length;
    int64_t pointer_offset;  // 1: the buffers start off 16-byte alignment, so every element is scalar
  };
  for (const Case& k : {Case{1, 5, 0, 0}, Case{2, 200, (int64_t{1} << 19) + 333, 0}, Case{3, 40, 100003, 0},
                        Case{4, 60, (int64_t{1} << 18) + 1, 1}}) {
    int64_t extent = 0;
    const std::vector<AdamWSegment> segments = random_segments(k.seed, k.small_count, k.large_length, &extent);
    const int64_t n = k.pointer_offset + extent;
    std::vector<char> inside(static_cast<size_t>(n), 0);
    for (const AdamWSegment& seg : segments) {
      std::fill_n(inside.begin() + k.pointer_offset + seg.begin, seg.length, 1);
    }
    // Fresh values inside the segments, poison everywhere else.
    const auto seeded = [&](uint64_t stream, double scale) {
      std::vector<float> x = random_normals(k.seed, stream, n, scale);
      for (int64_t i = 0; i < n; ++i) {
        if (!inside[static_cast<size_t>(i)]) x[static_cast<size_t>(i)] = poison();
      }
      return x;
    };
    std::vector<float> p = seeded(1, 1.0), m = seeded(2, 1e-3), v = seeded(3, 1e-3);
    for (int64_t i = 0; i < n; ++i) {
      if (inside[static_cast<size_t>(i)]) v[static_cast<size_t>(i)] *= v[static_cast<size_t>(i)];
    }
    GuardedDeviceArray dp(p), dm(m), dv(v);
    const AdamWSegmentTable table(segments);
    const int64_t o = k.pointer_offset;
    for (int64_t t = 1; t <= 4; ++t) {
      const std::vector<float> g = seeded(10 + static_cast<uint64_t>(t), 0.01);
      GuardedDeviceArray dg(g);
      const AdamWStep s{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 100 + t};
      adamw_update_segments_cuda(dp.ptr + o, dg.ptr + o, dm.ptr + o, dv.ptr + o, table, s, nullptr);
      for (const AdamWSegment& seg : segments) {
        AdamWStep segment_step = s;
        if (!seg.weight_decay) segment_step.weight_decay = 0.0f;
        const int64_t b = o + seg.begin;
        adamw_update_cpu(p.data() + b, g.data() + b, m.data() + b, v.data() + b, seg.length, segment_step);
      }
      // dg is freed at the end of the iteration: the launch must be done with it.
      DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
    }
    const auto compare = [&](const std::vector<float>& got, const std::vector<float>& want, const char* what) {
      std::vector<float> got_inside, want_inside;
      int64_t gaps_changed = 0;
      for (int64_t i = 0; i < n; ++i) {
        const size_t e = static_cast<size_t>(i);
        if (inside[e]) {
          got_inside.push_back(got[e]), want_inside.push_back(want[e]);
        } else if (!is_poison(got[e])) {
          ++gaps_changed;
        }
      }
      const double err = max_relative_error(got_inside, want_inside);
      std::printf("adamw segments seed=%llu (%zu segments, %zu elements, %lld outside, pointer offset %lld): %s max "
                  "rel error %.3g (tolerance %.0e), %lld outside elements changed\n",
                  static_cast<unsigned long long>(k.seed), segments.size(), got_inside.size(),
                  static_cast<long long>(n - static_cast<int64_t>(got_inside.size())), static_cast<long long>(o),
                  what, err, kAdamWTolerance, static_cast<long long>(gaps_changed));
      INFO("seed ", k.seed, " ", what);
      CHECK(err <= kAdamWTolerance);
      CHECK(gaps_changed == 0);
    };
    compare(dp.download(), p, "param");
    compare(dm.download(), m, "m");
    compare(dv.download(), v, "v");
  }
}

TEST_CASE("sum_of_squares_cuda matches sum_of_squares_cpu") {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{(1 << 20) + 3},
                    int64_t{(1 << 24) + 5}}) {
    const std::vector<float> x = random_normals(77, static_cast<uint64_t>(n), n, 2.0);
    GuardedDeviceArray dx(x);
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
    GuardedDeviceArray dx(x);
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
  GuardedDeviceArray dp(p), dg(g), dm(m), dv(v);
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

TEST_CASE("timing: AdamW on the GPT-2 124M layout, one segmented launch against one launch per tensor") {
  const GptShape shape{12, 768, 12, 50304, 1024, 0, PositionKind::learned};
  const std::vector<ParamSpec> specs = gpt_param_specs(shape);
  const int64_t n = gpt_num_params(shape);
  std::vector<AdamWSegment> segments;
  for (const ParamSpec& spec : specs) segments.push_back({spec.offset, spec.numel, spec.weight_decay});
  const AdamWSegmentTable table(segments);
  // Arithmetic speed does not depend on the values, so constant inputs save the host Philox.
  GuardedDeviceArray dp(std::vector<float>(n, 0.5f)), dg(std::vector<float>(n, 0.01f)),
      dm(std::vector<float>(n, 1e-3f)), dv(std::vector<float>(n, 1e-6f));
  int64_t step = 1;
  const double per_tensor_ms = median_ms(
      [&] {
        const int64_t t = step++;
        for (const ParamSpec& spec : specs) {
          const AdamWStep s{1e-4f, 0.9f, 0.95f, 1e-8f, spec.weight_decay ? 0.1f : 0.0f, t};
          adamw_update_cuda(dp.ptr + spec.offset, dg.ptr + spec.offset, dm.ptr + spec.offset, dv.ptr + spec.offset,
                            spec.numel, s, nullptr);
        }
      },
      5, 50);
  const double segmented_ms = median_ms(
      [&] {
        adamw_update_segments_cuda(dp.ptr, dg.ptr, dm.ptr, dv.ptr, table,
                                   AdamWStep{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, step++}, nullptr);
      },
      5, 50);
  const double bytes = 7.0 * 4.0 * static_cast<double>(n);
  std::printf("TIMING adamw GPT-2 124M (n=%lld, %zu tensors): per-tensor launches median %.4f ms (%.1f GB/s), "
              "one segmented launch (%lld chunks) median %.4f ms (%.1f GB/s), %.2fx\n",
              static_cast<long long>(n), specs.size(), per_tensor_ms, bytes / (per_tensor_ms * 1e-3) / 1e9,
              static_cast<long long>(table.num_chunks()), segmented_ms, bytes / (segmented_ms * 1e-3) / 1e9,
              per_tensor_ms / segmented_ms);
  CHECK(std::isfinite(sum_of_squares_cuda(dp.ptr, n, nullptr)));
}

}  // namespace
}  // namespace dilatron

#else
TEST_CASE("optim_gpu_test needs a build with --config=cuda") { FAIL("built without CUDA"); }
#endif
