// AdamW with decoupled weight decay (Loshchilov & Hutter, 2019), one flat fp32 tensor at a time,
// or on the GPU many segments of flat buffers in one launch. The CPU version is the reference;
// the CUDA versions must agree with it to fp32 rounding.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include "core/device_allocator.h"
#endif

namespace dilatron {

// step is 1-based: the bias corrections are 1 - beta^step.
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};

// In place on param, m, v (each n floats):
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p),  mhat = m / (1 - beta1^step), ...
void adamw_update_cpu(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s);

// A run [begin, begin + length) of the flat buffers whose elements share one weight-decay setting.
struct AdamWSegment {
  int64_t begin, length;
  bool weight_decay;
};

// A piece of one segment: the unit of work of a segmented update (a thread block on the GPU, a
// task of the host ZeRO-3 engine's pool).
struct AdamWChunk {
  int64_t begin;
  int32_t length;
  bool weight_decay;
};

// The segments cut at the multiples of chunk_elements (> 0, a multiple of 4, at most INT32_MAX),
// in the order given; empty segments give no chunks. Throws an Error on a negative begin or
// length, or on segments that overlap (a parallel update would update their common elements
// twice, racing).
std::vector<AdamWChunk> adamw_chunks(const std::vector<AdamWSegment>& segments, int64_t chunk_elements);

namespace detail {

// Bounded so that one launch over a 38M-element embedding and a 768-element bias balances:
// every block gets about the same work. A multiple of 4, so chunks cut at multiples of it
// keep the float4 alignment of the flat buffers.
constexpr int64_t kAdamWChunkElements = 8192;

}  // namespace detail

#ifdef DILATRON_CUDA
// Asynchronous on stream; all four pointers are device memory.
void adamw_update_cuda(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s,
                       cudaStream_t stream);

// The segments on the device, cut into chunks of bounded size so one launch balances the work;
// built once (it allocates and uploads, then waits for the upload), used every step. Its memory
// comes from the caching allocator for work on `stream`, which is where it should be used.
class AdamWSegmentTable {
 public:
  explicit AdamWSegmentTable(const std::vector<AdamWSegment>& segments, cudaStream_t stream = nullptr);

  const AdamWChunk* chunks() const { return chunks_.data(); }
  int64_t num_chunks() const { return chunks_.size(); }

 private:
  DeviceArray<AdamWChunk> chunks_;
};

// One launch over every segment of the table: AdamW on param/grad/m/v at the segment's
// elements, with s.weight_decay applied only where segment.weight_decay is true (0 elsewhere).
// Elements in no segment are neither read nor written. Asynchronous on stream; the pointers
// are device memory covering every segment.
void adamw_update_segments_cuda(float* param, const float* grad, float* m, float* v,
                                const AdamWSegmentTable& table, const AdamWStep& s, cudaStream_t stream);
#endif

namespace detail {

// Per-step constants shared by the CPU and CUDA paths, so both round them identically.
struct AdamWScalars {
  float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  float bias_correction1, bias_correction2;
};

AdamWScalars adamw_scalars(const AdamWStep& s);

}  // namespace detail
}  // namespace dilatron
