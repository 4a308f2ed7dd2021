// Fused softmax cross-entropy kernels: one block per row of logits (N, V). Each thread keeps an
// online-softmax pair (running max m, sum s of exp(x - m)) over its strided share of the row,
// and the block merges the pairs, so the forward reads each logit exactly once. Loads are
// scalar but coalesced; the kernels are bandwidth-bound (2 bytes per bf16 logit forward, 4 back).
#include <cuda_bf16.h>

#include <cmath>

#include "model/cross_entropy_cuda.h"

namespace dilatron {
namespace {

static_assert(sizeof(bf16) == sizeof(__nv_bfloat16), "bf16 and __nv_bfloat16 share one layout");

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

struct MaxSum {
  float m;  // running max
  float s;  // sum of exp(x - m)
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  // An empty pair (m = -inf) would turn exp(-inf - -inf) into NaN.
  if (a.m == -INFINITY) return b;
  if (b.m == -INFINITY) return a;
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ MaxSum warp_merge(MaxSum p) {
  for (int offset = 16; offset > 0; offset /= 2) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, p.m, offset), __shfl_xor_sync(0xffffffffu, p.s, offset)};
    p = merge(p, other);
  }
  return p;
}

// Every thread of the block gets the merged pair of the whole block.
__device__ MaxSum block_merge(MaxSum p) {
  __shared__ MaxSum per_warp[kWarps];
  __shared__ MaxSum total;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  p = warp_merge(p);
  if (lane == 0) per_warp[warp] = p;
  __syncthreads();
  if (warp == 0) {
    MaxSum q = lane < kWarps ? per_warp[lane] : MaxSum{-INFINITY, 0.0f};
    q = warp_merge(q);
    if (lane == 0) total = q;
  }
  __syncthreads();
  const MaxSum result = total;
  // per_warp and total are reused by the next row of this block.
  __syncthreads();
  return result;
}

template <typename T>
__global__ void cross_entropy_forward_kernel(float* __restrict__ losses, float* __restrict__ lse,
                                             const T* __restrict__ logits, const int32_t* __restrict__ targets,
                                             int64_t N, int V) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* row = logits + n * V;
    MaxSum p{-INFINITY, 0.0f};
    for (int v = threadIdx.x; v < V; v += kThreads) {
      const float x = to_float(row[v]);
      if (x > p.m) {
        p.s = p.s * expf(p.m - x) + 1.0f;
        p.m = x;
      } else {
        p.s += expf(x - p.m);
      }
    }
    p = block_merge(p);
    if (threadIdx.x == 0) {
      const float row_lse = p.m + logf(p.s);
      lse[n] = row_lse;
      const int32_t target = targets[n];
      losses[n] = target < 0 ? 0.0f : target >= V ? NAN : row_lse - to_float(row[target]);
    }
  }
}

// No __restrict__ on dlogits and logits: they may alias. Each element is read, then written,
// by the same thread.
template <typename T>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* logits, const float* __restrict__ lse,
                                              const int32_t* __restrict__ targets, float dloss_weight, int64_t N,
                                              int V) {
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* row = logits + n * V;
    T* drow = dlogits + n * V;
    const int32_t target = targets[n];
    if (target < 0) {
      for (int v = threadIdx.x; v < V; v += kThreads) store(drow + v, 0.0f);
      continue;
    }
    const float row_lse = lse[n];
    for (int v = threadIdx.x; v < V; v += kThreads) {
      const float softmax = expf(to_float(row[v]) - row_lse);
      store(drow + v, (softmax - (v == target ? 1.0f : 0.0f)) * dloss_weight);
    }
  }
}

int blocks_for(int64_t N) { return static_cast<int>(N < kMaxBlocks ? N : kMaxBlocks); }

const __nv_bfloat16* device_type(const bf16* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }
__nv_bfloat16* device_type(bf16* p) { return reinterpret_cast<__nv_bfloat16*>(p); }
const float* device_type(const float* p) { return p; }
float* device_type(float* p) { return p; }

template <typename T>
cudaError_t forward(float* losses, float* lse, const T* logits, const int32_t* targets, int64_t N, int V,
                    cudaStream_t stream) {
  cross_entropy_forward_kernel<<<blocks_for(N), kThreads, 0, stream>>>(losses, lse, device_type(logits), targets,
                                                                        N, V);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(T* dlogits, const T* logits, const float* lse, const int32_t* targets, float dloss_weight,
                     int64_t N, int V, cudaStream_t stream) {
  cross_entropy_backward_kernel<<<blocks_for(N), kThreads, 0, stream>>>(
      device_type(dlogits), device_type(logits), lse, targets, dloss_weight, N, V);
  return cudaGetLastError();
}

}  // namespace

namespace detail {

cudaError_t launch_cross_entropy_forward(float* losses, float* lse, const bf16* logits, const int32_t* targets,
                                         int64_t N, int V, cudaStream_t stream) {
  return forward(losses, lse, logits, targets, N, V, stream);
}
cudaError_t launch_cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                                         int64_t N, int V, cudaStream_t stream) {
  return forward(losses, lse, logits, targets, N, V, stream);
}
cudaError_t launch_cross_entropy_backward(bf16* dlogits, const bf16* logits, const float* lse,
                                          const int32_t* targets, float dloss_weight, int64_t N, int V,
                                          cudaStream_t stream) {
  return backward(dlogits, logits, lse, targets, dloss_weight, N, V, stream);
}
cudaError_t launch_cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                                          const int32_t* targets, float dloss_weight, int64_t N, int V,
                                          cudaStream_t stream) {
  return backward(dlogits, logits, lse, targets, dloss_weight, N, V, stream);
}

}  // namespace detail
}  // namespace dilatron
