// What the GPU attention tests share (attention_gpu_test, ring_attention_gpu_test): dtype traits
// and tolerances, seeded inputs rounded to what T holds, a device buffer that uploads from and
// downloads to float and can be poisoned with NaN bits, and the element-wise comparison that
// treats -inf (rows no key sees) exactly and any NaN as an infinite error. Test code only.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/bf16.h"
#include "core/cuda_check.h"
#include "core/rng.h"

namespace dilatron::attention_test {

template <typename T>
constexpr bool kIsBf16 = std::is_same_v<T, bf16>;

template <typename T>
const char* dtype_name() {
  return kIsBf16<T> ? "bf16" : "fp32";
}
// Of out, dq, dk, dv, relative to the largest reference entry (see the tests' headers).
template <typename T>
double tolerance() {
  return kIsBf16<T> ? 1e-2 : 1e-5;
}
constexpr double kLseTolerance = 1e-5;

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) { return x.to_float(); }
template <typename T>
T from_float(float x) {
  if constexpr (kIsBf16<T>) return bf16::from_float(x);
  else return x;
}

// Normal values already rounded to what T holds, as float.
template <typename T>
std::vector<float> random_inputs(uint64_t seed, uint64_t stream, int64_t count) {
  CounterRng rng(seed, stream);
  std::vector<float> x(static_cast<size_t>(count));
  for (float& e : x) e = to_float(from_float<T>(static_cast<float>(rng.normal())));
  return x;
}

// A device array of E, uploaded from / downloaded to float.
template <typename E>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t count) : count_(static_cast<size_t>(count)) {
    DILATRON_CUDA_CHECK(cudaMalloc(&ptr_, std::max<size_t>(count_, 1) * sizeof(E)));
  }
  explicit DeviceBuffer(const std::vector<float>& host) : DeviceBuffer(static_cast<int64_t>(host.size())) {
    std::vector<E> converted(count_);
    for (size_t i = 0; i < count_; ++i) converted[i] = from_float<E>(host[i]);
    DILATRON_CUDA_CHECK(cudaMemcpy(ptr_, converted.data(), count_ * sizeof(E), cudaMemcpyHostToDevice));
    // A pageable upload may return before its DMA lands, and a kernel on a non-blocking stream
    // is not ordered after the legacy stream's copy.
    DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
  }
  ~DeviceBuffer() { (void)cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  E* get() const { return ptr_; }
  // All bits set: a NaN in fp32 and in bf16. Queued on the stream the code under test runs on:
  // cudaMemset on the legacy stream is asynchronous for device memory and unordered with a
  // non-blocking stream, so it could land after the code's own initialisation (it did, in the
  // ring test: out NaN, lse + ln 2 from merging into a NaN lse).
  void poison(cudaStream_t stream) {
    DILATRON_CUDA_CHECK(cudaMemsetAsync(ptr_, 0xff, count_ * sizeof(E), stream));
  }
  std::vector<E> raw() const {
    DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<E> raw(count_);
    DILATRON_CUDA_CHECK(cudaMemcpy(raw.data(), ptr_, count_ * sizeof(E), cudaMemcpyDeviceToHost));
    return raw;
  }
  std::vector<float> download() const {
    std::vector<float> out;
    for (const E& e : raw()) out.push_back(to_float(e));
    return out;
  }

 private:
  E* ptr_ = nullptr;
  size_t count_;
};

// max(floor, max |x| over finite x): the scale errors are measured against.
inline double max_abs_finite(const std::vector<double>& x, double floor) {
  double m = floor;
  for (double w : x)
    if (std::isfinite(w)) m = std::max(m, std::abs(w));
  return m;
}

// The worst element of a comparison, for the printed line.
struct Comparison {
  double error = 0;  // max |got - want| / scale; inf for a NaN or a misplaced inf
  size_t worst = 0;  // where
  int64_t inf_mismatches = 0;
};

// want == +-inf must be matched exactly; elsewhere |got - want| / scale.
inline Comparison compare(const std::vector<float>& got, const std::vector<double>& want, double scale) {
  REQUIRE(got.size() == want.size());
  Comparison c;
  for (size_t i = 0; i < want.size(); ++i) {
    double e;
    if (std::isinf(want[i]) || std::isinf(got[i])) {
      const bool same = static_cast<double>(got[i]) == want[i];
      c.inf_mismatches += !same;
      e = same ? 0.0 : std::numeric_limits<double>::infinity();
    } else {
      e = std::isnan(got[i]) ? std::numeric_limits<double>::infinity() : std::abs(got[i] - want[i]) / scale;
    }
    if (e > c.error || (std::isinf(e) && !std::isinf(c.error))) c.error = e, c.worst = i;
  }
  return c;
}

}  // namespace dilatron::attention_test
#endif
