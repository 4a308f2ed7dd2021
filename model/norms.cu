// LayerNorm and RMSNorm on the GPU. One warp per row (N rows of C) for the forward and the input
// gradient, each lane reading 16 bytes of the row at a time where C and the pointers allow it;
// fp32 statistics whatever T is.
//
// The parameter gradients (dweight, dbias) are a column reduction over N, done in two stages so
// that it fills the GPU and stays deterministic (fixed summation order, no atomics):
//   1. a grid of column tiles x row splits: each block sums its rows of one tile of columns,
//      each thread 16 bytes of a row at a time (8 bf16 or 4 fp32 columns; one column where C or
//      a pointer does not allow it), and writes its fp32 partial sums to scratch (splits, C);
//   2. one thread per column adds the splits' partials in order and ADDS the total to dweight
//      and dbias.
// The split count depends on N only (never on the GPU), so the same inputs give the same bits
// on any device. At N = 16384, C = 768 (bf16) stage 1 runs 3 x 128 blocks of 256 threads where a
// single-stage reduction would run ceil(C / 32) = 24.
#include "model/cuda_math.cuh"
#include "model/cuda_pack.cuh"
#include "model/layers_cuda_kernels.h"

namespace dilatron::detail {
namespace {

using gpu::from_float;
using gpu::to_float;
using gpu::warp_sum;

constexpr int kRowsPerBlock = 8;  // warps per block in the row kernels

// Row n = blockIdx.x * kRowsPerBlock + threadIdx.y, lane threadIdx.x strides over C.
__device__ __forceinline__ int64_t warp_row() { return blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y; }

int row_blocks(int64_t N) { return static_cast<int>((N + kRowsPerBlock - 1) / kRowsPerBlock); }

// The row kernels read kVec adjacent columns per lane and step: 16-byte packs (kVec =
// kPack16<T>) when C and every pointer allow it, single elements (kVec = 1) otherwise.
template <typename T, int kVec>
__global__ void layernorm_forward_kernel(T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                                         const T* __restrict__ inp, const T* __restrict__ weight,
                                         const T* __restrict__ bias, int64_t N, int C, float eps) {
  const int64_t n = warp_row();
  if (n >= N) return;
  const T* x = inp + n * C;
  constexpr int kStep = gpu::kWarp * kVec;
  float sum = 0;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c);
#pragma unroll
    for (int j = 0; j < kVec; ++j) sum += to_float(xv.v[j]);
  }
  const float m = warp_sum(sum) / C;
  // Two passes (the row stays in L1/L2): the one-pass E[x^2] - m^2 cancels badly when |m| >> std.
  float var = 0;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float d = to_float(xv.v[j]) - m;
      var += d * d;
    }
  }
  const float r = 1.0f / sqrtf(warp_sum(var) / C + eps);
  T* y = out + n * C;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c), wv = gpu::load_pack<kVec>(weight + c),
                             bv = gpu::load_pack<kVec>(bias + c);
    gpu::Pack<T, kVec> yv;
#pragma unroll
    for (int j = 0; j < kVec; ++j)
      yv.v[j] = from_float<T>((to_float(xv.v[j]) - m) * r * to_float(wv.v[j]) + to_float(bv.v[j]));
    gpu::store_pack<kVec>(y + c, yv);
  }
  if (threadIdx.x == 0) {
    mean[n] = m;
    rstd[n] = r;
  }
}

template <typename T, int kVec>
__global__ void layernorm_input_grad_kernel(T* __restrict__ dinp, const T* __restrict__ dout,
                                            const T* __restrict__ inp, const T* __restrict__ weight,
                                            const float* __restrict__ mean, const float* __restrict__ rstd, int64_t N,
                                            int C) {
  const int64_t n = warp_row();
  if (n >= N) return;
  const T* x = inp + n * C;
  const T* dy = dout + n * C;
  const float m = mean[n], r = rstd[n];
  constexpr int kStep = gpu::kWarp * kVec;
  float dnorm_sum = 0, dnorm_xhat_sum = 0;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c), dyv = gpu::load_pack<kVec>(dy + c),
                             wv = gpu::load_pack<kVec>(weight + c);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float dnorm = to_float(dyv.v[j]) * to_float(wv.v[j]);
      dnorm_sum += dnorm;
      dnorm_xhat_sum += dnorm * (to_float(xv.v[j]) - m) * r;
    }
  }
  const float dnorm_mean = warp_sum(dnorm_sum) / C;
  const float dnorm_xhat_mean = warp_sum(dnorm_xhat_sum) / C;
  T* dx = dinp + n * C;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c), dyv = gpu::load_pack<kVec>(dy + c),
                             wv = gpu::load_pack<kVec>(weight + c);
    gpu::Pack<T, kVec> dxv = gpu::load_pack<kVec>(dx + c);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float xhat = (to_float(xv.v[j]) - m) * r;
      const float g = (to_float(dyv.v[j]) * to_float(wv.v[j]) - dnorm_mean - xhat * dnorm_xhat_mean) * r;
      dxv.v[j] = from_float<T>(to_float(dxv.v[j]) + g);
    }
    gpu::store_pack<kVec>(dx + c, dxv);
  }
}

template <typename T, int kVec>
__global__ void rmsnorm_forward_kernel(T* __restrict__ out, float* __restrict__ rstd, const T* __restrict__ inp,
                                       const T* __restrict__ weight, int64_t N, int C, float eps) {
  const int64_t n = warp_row();
  if (n >= N) return;
  const T* x = inp + n * C;
  constexpr int kStep = gpu::kWarp * kVec;
  float sum_sq = 0;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float v = to_float(xv.v[j]);
      sum_sq += v * v;
    }
  }
  const float r = 1.0f / sqrtf(warp_sum(sum_sq) / C + eps);
  T* y = out + n * C;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c), wv = gpu::load_pack<kVec>(weight + c);
    gpu::Pack<T, kVec> yv;
#pragma unroll
    for (int j = 0; j < kVec; ++j) yv.v[j] = from_float<T>(to_float(xv.v[j]) * r * to_float(wv.v[j]));
    gpu::store_pack<kVec>(y + c, yv);
  }
  if (threadIdx.x == 0) rstd[n] = r;
}

template <typename T, int kVec>
__global__ void rmsnorm_input_grad_kernel(T* __restrict__ dinp, const T* __restrict__ dout,
                                          const T* __restrict__ inp, const T* __restrict__ weight,
                                          const float* __restrict__ rstd, int64_t N, int C) {
  const int64_t n = warp_row();
  if (n >= N) return;
  const T* x = inp + n * C;
  const T* dy = dout + n * C;
  const float r = rstd[n];
  constexpr int kStep = gpu::kWarp * kVec;
  float dnorm_xhat_sum = 0;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c), dyv = gpu::load_pack<kVec>(dy + c),
                             wv = gpu::load_pack<kVec>(weight + c);
#pragma unroll
    for (int j = 0; j < kVec; ++j) dnorm_xhat_sum += to_float(dyv.v[j]) * to_float(wv.v[j]) * to_float(xv.v[j]) * r;
  }
  const float dnorm_xhat_mean = warp_sum(dnorm_xhat_sum) / C;
  T* dx = dinp + n * C;
  for (int c = threadIdx.x * kVec; c < C; c += kStep) {
    const gpu::Pack<T, kVec> xv = gpu::load_pack<kVec>(x + c), dyv = gpu::load_pack<kVec>(dy + c),
                             wv = gpu::load_pack<kVec>(weight + c);
    gpu::Pack<T, kVec> dxv = gpu::load_pack<kVec>(dx + c);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float xhat = to_float(xv.v[j]) * r;
      const float g = (to_float(dyv.v[j]) * to_float(wv.v[j]) - xhat * dnorm_xhat_mean) * r;
      dxv.v[j] = from_float<T>(to_float(dxv.v[j]) + g);
    }
    gpu::store_pack<kVec>(dx + c, dxv);
  }
}

// Whether every pointer's rows of C elements can be read kPack16<T> at a time.
template <typename... Ptrs>
bool packable(int C, const Ptrs*... ptrs) {
  return (gpu::rows_aligned_16(ptrs, C) && ...);
}

const dim3 kRowBlock(gpu::kWarp, kRowsPerBlock);

constexpr int kGradRowLanes = 8;      // threadIdx.y of stage 1: rows a block reads at once
constexpr int kMaxRowSplits = 128;    // about one block per SM and column tile on an H100
constexpr int kMinRowsPerSplit = 64;  // so the partials (8 bytes per column) stay a few % of the traffic
constexpr int kSumLanes = 32;         // threadIdx.y of stage 2: splits read at once per column

struct RowSplits {
  int count;
  int64_t rows;  // per split; the last one may have fewer
};

RowSplits row_splits(int64_t N) {
  const int64_t wanted = (N + kMinRowsPerSplit - 1) / kMinRowsPerSplit;
  const int64_t count = wanted < kMaxRowSplits ? wanted : kMaxRowSplits;
  const int64_t rows = (N + count - 1) / count;
  return {static_cast<int>((N + rows - 1) / rows), rows};
}

// Stage 1. Block (tile, split) owns columns [tile * 32 * kVec, +32 * kVec) of rows
// [split * rows_per_split, +rows_per_split); thread (x, y) owns kVec adjacent columns and rows
// y, y + kGradRowLanes, ... of that range. mean == nullptr: RMSNorm (xhat = x * rstd);
// db_part == nullptr: no bias.
template <typename T, int kVec>
__global__ void __launch_bounds__(gpu::kWarp * kGradRowLanes)
    norm_param_grad_partial_kernel(float* __restrict__ dw_part, float* __restrict__ db_part,
                                   const T* __restrict__ dout, const T* __restrict__ inp,
                                   const float* __restrict__ mean, const float* __restrict__ rstd, int64_t N, int C,
                                   int64_t rows_per_split) {
  constexpr int kTile = gpu::kWarp * kVec;
  __shared__ float dw_lanes[kGradRowLanes][kTile];
  __shared__ float db_lanes[kGradRowLanes][kTile];
  const int tile0 = blockIdx.x * kTile;
  const int c0 = tile0 + threadIdx.x * kVec;
  const int64_t begin = blockIdx.y * rows_per_split;
  const int64_t end = begin + rows_per_split < N ? begin + rows_per_split : N;
  float dw[kVec] = {}, db[kVec] = {};
  if (c0 < C) {
#pragma unroll 4
    for (int64_t n = begin + threadIdx.y; n < end; n += kGradRowLanes) {
      const gpu::Pack<T, kVec> dy = gpu::load_pack<kVec>(dout + n * C + c0);
      const gpu::Pack<T, kVec> x = gpu::load_pack<kVec>(inp + n * C + c0);
      const float m = mean ? mean[n] : 0.0f, r = rstd[n];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float g = to_float(dy.v[j]);
        dw[j] += (to_float(x.v[j]) - m) * r * g;
        db[j] += g;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    dw_lanes[threadIdx.y][threadIdx.x * kVec + j] = dw[j];
    db_lanes[threadIdx.y][threadIdx.x * kVec + j] = db[j];
  }
  __syncthreads();
  // Each (column, dweight or dbias) sums the row lanes 0, 1, ... in order.
  const int thread = threadIdx.y * gpu::kWarp + threadIdx.x;
  for (int i = thread; i < 2 * kTile; i += gpu::kWarp * kGradRowLanes) {
    const bool bias = i >= kTile;
    const int col = bias ? i - kTile : i;
    float* part = bias ? db_part : dw_part;
    if (tile0 + col >= C || part == nullptr) continue;
    float sum = 0;
    for (int k = 0; k < kGradRowLanes; ++k) sum += bias ? db_lanes[k][col] : dw_lanes[k][col];
    part[blockIdx.y * static_cast<int64_t>(C) + tile0 + col] = sum;
  }
}

// Stage 2. Thread (x, y) of block b sums the partials of column b * 32 + x over splits
// y, y + kSumLanes, ..., then lane 0 of the column adds the kSumLanes sums in order.
__global__ void __launch_bounds__(gpu::kWarp * kSumLanes)
    norm_param_grad_sum_kernel(float* __restrict__ dweight, float* __restrict__ dbias,
                               const float* __restrict__ dw_part, const float* __restrict__ db_part, int splits,
                               int C) {
  __shared__ float dw_lanes[kSumLanes][gpu::kWarp + 1];
  __shared__ float db_lanes[kSumLanes][gpu::kWarp + 1];
  const int c = blockIdx.x * gpu::kWarp + threadIdx.x;
  float dw = 0, db = 0;
  if (c < C) {
#pragma unroll 4
    for (int s = threadIdx.y; s < splits; s += kSumLanes) {
      dw += dw_part[static_cast<int64_t>(s) * C + c];
      if (dbias) db += db_part[static_cast<int64_t>(s) * C + c];
    }
  }
  dw_lanes[threadIdx.y][threadIdx.x] = dw;
  db_lanes[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  for (int k = 1; k < kSumLanes; ++k) {
    dw += dw_lanes[k][threadIdx.x];
    db += db_lanes[k][threadIdx.x];
  }
  dweight[c] += dw;
  if (dbias) dbias[c] += db;
}

}  // namespace

int64_t norm_param_grad_scratch_floats(int64_t N, int C) { return 2 * int64_t{row_splits(N).count} * C; }

template <typename T>
cudaError_t launch_norm_param_grad(float* dweight, float* dbias, const T* dout, const T* inp, const float* mean,
                                   const float* rstd, int64_t N, int C, float* scratch, cudaStream_t stream) {
  const RowSplits splits = row_splits(N);
  float* dw_part = scratch;
  float* db_part = dbias ? scratch + int64_t{splits.count} * C : nullptr;
  const dim3 block(gpu::kWarp, kGradRowLanes);
  constexpr int kVec = gpu::kPack16<T>;
  if (packable(C, dout, inp)) {
    const dim3 grid((C + gpu::kWarp * kVec - 1) / (gpu::kWarp * kVec), splits.count);
    norm_param_grad_partial_kernel<T, kVec>
        <<<grid, block, 0, stream>>>(dw_part, db_part, dout, inp, mean, rstd, N, C, splits.rows);
  } else {
    const dim3 grid((C + gpu::kWarp - 1) / gpu::kWarp, splits.count);
    norm_param_grad_partial_kernel<T, 1>
        <<<grid, block, 0, stream>>>(dw_part, db_part, dout, inp, mean, rstd, N, C, splits.rows);
  }
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  norm_param_grad_sum_kernel<<<(C + gpu::kWarp - 1) / gpu::kWarp, dim3(gpu::kWarp, kSumLanes), 0, stream>>>(
      dweight, dbias, dw_part, db_part, splits.count, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                                     const T* bias, int64_t N, int C, float eps, cudaStream_t stream) {
  if (packable(C, out, inp, weight, bias))
    layernorm_forward_kernel<T, gpu::kPack16<T>>
        <<<row_blocks(N), kRowBlock, 0, stream>>>(out, mean, rstd, inp, weight, bias, N, C, eps);
  else
    layernorm_forward_kernel<T, 1>
        <<<row_blocks(N), kRowBlock, 0, stream>>>(out, mean, rstd, inp, weight, bias, N, C, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp,
                                      const T* weight, const float* mean, const float* rstd, int64_t N, int C,
                                      float* scratch, cudaStream_t stream) {
  if (packable(C, dinp, dout, inp, weight))
    layernorm_input_grad_kernel<T, gpu::kPack16<T>>
        <<<row_blocks(N), kRowBlock, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
  else
    layernorm_input_grad_kernel<T, 1>
        <<<row_blocks(N), kRowBlock, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  return launch_norm_param_grad(dweight, dbias, dout, inp, mean, rstd, N, C, scratch, stream);
}

template <typename T>
cudaError_t launch_rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, int64_t N, int C, float eps,
                                   cudaStream_t stream) {
  if (packable(C, out, inp, weight))
    rmsnorm_forward_kernel<T, gpu::kPack16<T>>
        <<<row_blocks(N), kRowBlock, 0, stream>>>(out, rstd, inp, weight, N, C, eps);
  else
    rmsnorm_forward_kernel<T, 1><<<row_blocks(N), kRowBlock, 0, stream>>>(out, rstd, inp, weight, N, C, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight,
                                    const float* rstd, int64_t N, int C, float* scratch, cudaStream_t stream) {
  if (packable(C, dinp, dout, inp, weight))
    rmsnorm_input_grad_kernel<T, gpu::kPack16<T>>
        <<<row_blocks(N), kRowBlock, 0, stream>>>(dinp, dout, inp, weight, rstd, N, C);
  else
    rmsnorm_input_grad_kernel<T, 1><<<row_blocks(N), kRowBlock, 0, stream>>>(dinp, dout, inp, weight, rstd, N, C);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  return launch_norm_param_grad<T>(dweight, nullptr, dout, inp, nullptr, rstd, N, C, scratch, stream);
}

#define DILATRON_INSTANTIATE(T)                                                                                   \
  template cudaError_t launch_layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int, \
                                                   float, cudaStream_t);                                          \
  template cudaError_t launch_layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*, const float*, \
                                                    const float*, int64_t, int, float*, cudaStream_t);             \
  template cudaError_t launch_rmsnorm_forward<T>(T*, float*, const T*, const T*, int64_t, int, float, cudaStream_t); \
  template cudaError_t launch_rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int64_t,  \
                                                  int, float*, cudaStream_t);                                       \
  template cudaError_t launch_norm_param_grad<T>(float*, float*, const T*, const T*, const float*, const float*,    \
                                                 int64_t, int, float*, cudaStream_t);
DILATRON_INSTANTIATE(float)
DILATRON_INSTANTIATE(__nv_bfloat16)
#undef DILATRON_INSTANTIATE

}  // namespace dilatron::detail
