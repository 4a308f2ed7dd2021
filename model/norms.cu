// LayerNorm and RMSNorm on the GPU. One warp per row (N rows of C) for the forward and the input
// gradient, each lane reading 16 bytes of the row at a time where C and the pointers allow it;
// fp32 statistics whatever T is.
//
// The parameter gradients (dweight, dbias) are column sums over N (xhat * dy and dy), done by
// model/column_sums.cuh: deterministic, and spread over the GPU by row splits.
#include "model/column_sums.cuh"
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

// The two column sums of the parameter gradients, per row n and column c: xhat * dy (dweight)
// and dy (dbias), with xhat = (x - mean) * rstd (mean == nullptr: RMSNorm, xhat = x * rstd).
template <typename T, int kVec>
struct NormParamGradTerms {
  static constexpr int kCount = 2;
  const T* dout;
  const T* inp;
  const float* mean;
  const float* rstd;
  int C;

  __device__ __forceinline__ void add(int64_t n, int c0, float (&acc)[kCount][kVec]) const {
    const gpu::Pack<T, kVec> dy = gpu::load_pack<kVec>(dout + n * C + c0);
    const gpu::Pack<T, kVec> x = gpu::load_pack<kVec>(inp + n * C + c0);
    const float m = mean ? mean[n] : 0.0f, r = rstd[n];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float g = to_float(dy.v[j]);
      acc[0][j] += (to_float(x.v[j]) - m) * r * g;
      acc[1][j] += g;
    }
  }
};

}  // namespace

int64_t norm_param_grad_scratch_floats(int64_t N, int C) { return gpu::column_sums::scratch_floats(N, C, 2); }

template <typename T>
cudaError_t launch_norm_param_grad(float* dweight, float* dbias, const T* dout, const T* inp, const float* mean,
                                   const float* rstd, int64_t N, int C, float* scratch, cudaStream_t stream) {
  namespace cs = gpu::column_sums;
  const cs::Outputs<2> outputs{{dweight, dbias}};
  const cs::RowSplits splits = cs::row_splits(N);
  constexpr int kVec = gpu::kPack16<T>;
  if (packable(C, dout, inp))
    return cs::launch<kVec>(outputs, NormParamGradTerms<T, kVec>{dout, inp, mean, rstd, C}, N, C, splits, scratch,
                            stream);
  return cs::launch<1>(outputs, NormParamGradTerms<T, 1>{dout, inp, mean, rstd, C}, N, C, splits, scratch, stream);
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
