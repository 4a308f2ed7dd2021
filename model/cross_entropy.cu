// Fused softmax cross-entropy kernels: one block per row of logits (N, V), bandwidth-bound (2
// bytes per bf16 logit forward, 4 back). Each thread reads its share of the row as 16-byte
// packs (8 bf16 or 4 fp32 logits) where V and the pointers allow, one logit at a time otherwise,
// kChunk logits per step with every load issued before any is used. The forward keeps an
// online-softmax pair per thread (running max m, sum s of exp(x - m)) and updates it once per
// chunk: the chunk's max first, then one rescale of s and a plain sum of exponentials, so there
// is no per-logit branch; the block merges the pairs in a fixed order. Exponentials are exp2f of
// (x - m) * log2(e): one multiply and the hardware ex2 per logit.
//
// The fused forward_backward runs both on a row in one block: pass 1 (the forward) reads it from
// HBM, pass 2 re-reads it a few microseconds later, from L2, and writes the gradient over it, so
// a bf16 row costs 2 bytes per logit in and 2 out instead of 2 + 2 in and 2 out. Pass 2's loads
// and the gradient's stores (16-byte packs) are marked evict-first (.cs): read or written for the
// last time, they should not push out of L2 the rows other blocks have yet to re-read.
#include <cuda_bf16.h>

#include <cmath>

#include "core/device_type.h"
#include "model/cross_entropy_cuda.h"
#include "model/cuda_math.cuh"
#include "model/cuda_pack.cuh"

namespace dilatron {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;
constexpr int kChunk = 16;  // logits per thread per step: 2 packs of bf16, 4 of fp32, or 16 logits
constexpr float kLog2e = 1.4426950408889634f;

using gpu::from_float;
using gpu::to_float;

// exp(x - m) for the row's max or lse m.
__device__ __forceinline__ float exp_shifted(float x, float m) { return exp2f((x - m) * kLog2e); }

struct MaxSum {
  float m;  // running max
  float s;  // sum of exp(x - m)
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  // An empty pair (m = -inf) would turn exp(-inf - -inf) into NaN.
  if (a.m == -INFINITY) return b;
  if (b.m == -INFINITY) return a;
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * exp_shifted(a.m, m) + b.s * exp_shifted(b.m, m)};
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

// gpu::load_pack and gpu::store_pack with the evict-first hint (ld/st.global.cs) on 16-byte packs:
// for logits read for the last time and gradients the next kernel reads from HBM anyway. The
// one-logit fallback keeps plain accesses (hinted, its bf16 kernels spilled registers).
template <int kVec, typename T>
__device__ __forceinline__ gpu::Pack<T, kVec> load_pack_last_use(const T* p) {
  if constexpr (sizeof(gpu::Pack<T, kVec>) == 16) {
    gpu::Pack<T, kVec> x;
    *reinterpret_cast<uint4*>(&x) = __ldcs(reinterpret_cast<const uint4*>(p));
    return x;
  } else {
    return gpu::load_pack<kVec>(p);
  }
}
template <int kVec, typename T>
__device__ __forceinline__ void store_pack_streaming(T* p, const gpu::Pack<T, kVec>& x) {
  if constexpr (sizeof(x) == 16)
    __stcs(reinterpret_cast<uint4*>(p), *reinterpret_cast<const uint4*>(&x));
  else
    gpu::store_pack<kVec>(p, x);
}

// A thread's step over a row of `packs` packs of kVec logits: packs i0, i0 + kThreads, ... (each
// warp reads consecutive packs), kChunk logits in all, the ones past the row end read as -inf.
template <typename T, int kVec>
struct Chunk {
  static constexpr int kPacks = kChunk / kVec;
  float x[kChunk];

  // kLastUse: the row is not read again (the gradient pass), load it evict-first.
  template <bool kLastUse = false>
  __device__ __forceinline__ void load(const T* row, int i0, int packs) {
    gpu::Pack<T, kVec> raw[kPacks];
#pragma unroll
    for (int k = 0; k < kPacks; ++k)
      if (i0 + k * kThreads < packs) {
        const T* p = row + static_cast<int64_t>(i0 + k * kThreads) * kVec;
        if constexpr (kLastUse)
          raw[k] = load_pack_last_use<kVec>(p);
        else
          raw[k] = gpu::load_pack<kVec>(p);
      }
#pragma unroll
    for (int k = 0; k < kPacks; ++k)
#pragma unroll
      for (int j = 0; j < kVec; ++j) x[k * kVec + j] = i0 + k * kThreads < packs ? to_float(raw[k].v[j]) : -INFINITY;
  }
};

// Folds a chunk into the thread's pair: one rescale per chunk instead of a compare per logit.
__device__ __forceinline__ void absorb(MaxSum& p, const float (&x)[kChunk]) {
  float chunk_max = x[0];
#pragma unroll
  for (int j = 1; j < kChunk; ++j) chunk_max = fmaxf(chunk_max, x[j]);
  if (chunk_max == -INFINITY) return;  // only padding past the row end (or -inf logits)
  const float m = fmaxf(p.m, chunk_max);
  float s = 0;
#pragma unroll
  for (int j = 0; j < kChunk; ++j) s += exp_shifted(x[j], m);
  p.s = p.s * exp_shifted(p.m, m) + s;  // p.m = -inf (nothing yet): exp gives 0
  p.m = m;
}

// The row's (max, sum of exp(x - max)) pair, merged over the block (every thread gets it).
template <typename T, int kVec>
__device__ __forceinline__ MaxSum row_max_sum(const T* row, int packs) {
  MaxSum p{-INFINITY, 0.0f};
  for (int i0 = threadIdx.x; i0 < packs; i0 += kThreads * Chunk<T, kVec>::kPacks) {
    Chunk<T, kVec> chunk;
    chunk.load(row, i0, packs);
    absorb(p, chunk.x);
  }
  return block_merge(p);
}

__device__ __forceinline__ float row_lse(MaxSum p) { return p.m + logf(p.s); }

// The row's loss from its lse and its target's logit (read only for a target in [0, V)).
__device__ __forceinline__ float row_loss(float lse, int32_t target, int V, float target_logit) {
  return target < 0 ? 0.0f : target >= V ? NAN : lse - target_logit;
}

// One row's dlogits = (softmax - onehot(target)) * dloss_weight; zeros, without reading the row,
// for an ignored target. Each thread loads a whole chunk before it stores any of it, and only
// its own packs, so drow may equal row.
template <typename T, int kVec>
__device__ __forceinline__ void write_row_gradient(T* drow, const T* row, float lse, int32_t target,
                                                   float dloss_weight, int packs) {
  constexpr int kPacks = Chunk<T, kVec>::kPacks;
  if (target < 0) {
    const gpu::Pack<T, kVec> zero{};
    for (int i = threadIdx.x; i < packs; i += kThreads)
      store_pack_streaming<kVec>(drow + static_cast<int64_t>(i) * kVec, zero);
    return;
  }
  for (int i0 = threadIdx.x; i0 < packs; i0 += kThreads * kPacks) {
    Chunk<T, kVec> chunk;
    chunk.template load</*kLastUse=*/true>(row, i0, packs);
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int i = i0 + k * kThreads;
      if (i >= packs) break;
      // Where the target falls in this pack, if it does: a select per logit, not a branch.
      const int in_pack = target - i * kVec;
      gpu::Pack<T, kVec> g;
#pragma unroll
      for (int j = 0; j < kVec; ++j)
        g.v[j] = from_float<T>(exp_shifted(chunk.x[k * kVec + j], lse) * dloss_weight -
                               (j == in_pack ? dloss_weight : 0.0f));
      store_pack_streaming<kVec>(drow + static_cast<int64_t>(i) * kVec, g);
    }
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads, 2)
    cross_entropy_forward_kernel(float* __restrict__ losses, float* __restrict__ lse, const T* __restrict__ logits,
                                 const int32_t* __restrict__ targets, int64_t N, int V) {
  const int packs = V / kVec;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const T* row = logits + n * V;
    const float l = row_lse(row_max_sum<T, kVec>(row, packs));
    if (threadIdx.x == 0) {
      lse[n] = l;
      const int32_t target = targets[n];
      losses[n] = row_loss(l, target, V, target >= 0 && target < V ? to_float(row[target]) : 0.0f);
    }
  }
}

// No __restrict__ on dlogits and logits: they may alias (write_row_gradient).
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads, 2)
    cross_entropy_backward_kernel(T* dlogits, const T* logits, const float* __restrict__ lse,
                                  const int32_t* __restrict__ targets, float dloss_weight, int64_t N, int V) {
  const int packs = V / kVec;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x)
    write_row_gradient<T, kVec>(dlogits + n * V, logits + n * V, lse[n], targets[n], dloss_weight, packs);
}

// The forward and the backward of a row in one block, in place: the gradient overwrites the logits.
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads, 2)
    cross_entropy_forward_backward_kernel(float* __restrict__ losses, float* __restrict__ lse, T* logits,
                                          const int32_t* __restrict__ targets, float dloss_weight, int64_t N,
                                          int V) {
  const int packs = V / kVec;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    T* row = logits + n * V;
    const int32_t target = targets[n];
    // Read before the gradient overwrites the row: row_max_sum's barriers order this load before
    // any thread's store.
    const float target_logit = threadIdx.x == 0 && target >= 0 && target < V ? to_float(row[target]) : 0.0f;
    const float l = row_lse(row_max_sum<T, kVec>(row, packs));
    if (threadIdx.x == 0) {
      lse[n] = l;
      losses[n] = row_loss(l, target, V, target_logit);
    }
    write_row_gradient<T, kVec>(row, row, l, target, dloss_weight, packs);
  }
}

int blocks_for(int64_t N) { return static_cast<int>(N < kMaxBlocks ? N : kMaxBlocks); }

// 16-byte packs where every row of logits (and dlogits) starts 16-byte aligned, else one logit
// at a time: V not a multiple of 8 bf16 / 4 fp32 (such as 50257), or an offset pointer.
template <typename T>
cudaError_t forward(float* losses, float* lse, const T* logits, const int32_t* targets, int64_t N, int V,
                    cudaStream_t stream) {
  using D = device_type_t<T>;
  const D* x = device_ptr(logits);
  if (gpu::rows_aligned_16(x, V))
    cross_entropy_forward_kernel<D, gpu::kPack16<D>>
        <<<blocks_for(N), kThreads, 0, stream>>>(losses, lse, x, targets, N, V);
  else
    cross_entropy_forward_kernel<D, 1><<<blocks_for(N), kThreads, 0, stream>>>(losses, lse, x, targets, N, V);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward(T* dlogits, const T* logits, const float* lse, const int32_t* targets, float dloss_weight,
                     int64_t N, int V, cudaStream_t stream) {
  using D = device_type_t<T>;
  D* dx = device_ptr(dlogits);
  const D* x = device_ptr(logits);
  if (gpu::rows_aligned_16(x, V) && gpu::rows_aligned_16<D>(dx, V))
    cross_entropy_backward_kernel<D, gpu::kPack16<D>>
        <<<blocks_for(N), kThreads, 0, stream>>>(dx, x, lse, targets, dloss_weight, N, V);
  else
    cross_entropy_backward_kernel<D, 1>
        <<<blocks_for(N), kThreads, 0, stream>>>(dx, x, lse, targets, dloss_weight, N, V);
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_backward(float* losses, float* lse, T* logits, const int32_t* targets, float dloss_weight,
                             int64_t N, int V, cudaStream_t stream) {
  using D = device_type_t<T>;
  D* x = device_ptr(logits);
  if (gpu::rows_aligned_16<D>(x, V))
    cross_entropy_forward_backward_kernel<D, gpu::kPack16<D>>
        <<<blocks_for(N), kThreads, 0, stream>>>(losses, lse, x, targets, dloss_weight, N, V);
  else
    cross_entropy_forward_backward_kernel<D, 1>
        <<<blocks_for(N), kThreads, 0, stream>>>(losses, lse, x, targets, dloss_weight, N, V);
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
cudaError_t launch_cross_entropy_forward_backward(float* losses, float* lse, bf16* logits, const int32_t* targets,
                                                  float dloss_weight, int64_t N, int V, cudaStream_t stream) {
  return forward_backward(losses, lse, logits, targets, dloss_weight, N, V, stream);
}
cudaError_t launch_cross_entropy_forward_backward(float* losses, float* lse, float* logits, const int32_t* targets,
                                                  float dloss_weight, int64_t N, int V, cudaStream_t stream) {
  return forward_backward(losses, lse, logits, targets, dloss_weight, N, V, stream);
}

}  // namespace detail
}  // namespace dilatron
