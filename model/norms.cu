// LayerNorm and RMSNorm on the GPU. One warp per row (N rows of C) for the forward and the input
// gradient; fp32 statistics whatever T is. The parameter gradients are a column reduction over N
// in a second kernel: each block owns 32 columns and sums its rows in a fixed order, so dweight
// and dbias are deterministic (no atomics). It uses only ceil(C / 32) blocks: the first thing to
// split further (per-block partials) when it shows in a profile.
#include "model/cuda_math.cuh"
#include "model/layers_cuda_kernels.h"

namespace dilatron::detail {
namespace {

using gpu::from_float;
using gpu::to_float;
using gpu::warp_sum;

constexpr int kRowsPerBlock = 8;    // warps per block in the row kernels
constexpr int kReduceRows = 16;     // threadIdx.y extent of the column reduction

// mean == nullptr: RMSNorm (xhat = x * rstd); dbias == nullptr: no bias.
template <typename T>
__global__ void norm_param_grad_kernel(float* __restrict__ dweight, float* __restrict__ dbias,
                                       const T* __restrict__ dout, const T* __restrict__ inp,
                                       const float* __restrict__ mean, const float* __restrict__ rstd, int64_t N,
                                       int C) {
  __shared__ float dw_part[kReduceRows][gpu::kWarp + 1];
  __shared__ float db_part[kReduceRows][gpu::kWarp + 1];
  const int c = blockIdx.x * gpu::kWarp + threadIdx.x;
  float dw = 0, db = 0;
  if (c < C) {
    for (int64_t n = threadIdx.y; n < N; n += kReduceRows) {
      const float dy = to_float(dout[n * C + c]);
      const float m = mean ? mean[n] : 0.0f;
      dw += (to_float(inp[n * C + c]) - m) * rstd[n] * dy;
      db += dy;
    }
  }
  dw_part[threadIdx.y][threadIdx.x] = dw;
  db_part[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  for (int k = 1; k < kReduceRows; ++k) {
    dw += dw_part[k][threadIdx.x];
    db += db_part[k][threadIdx.x];
  }
  dweight[c] += dw;
  if (dbias) dbias[c] += db;
}

template <typename T>
cudaError_t launch_norm_param_grad(float* dweight, float* dbias, const T* dout, const T* inp, const float* mean,
                                   const float* rstd, int64_t N, int C, cudaStream_t stream) {
  const dim3 block(gpu::kWarp, kReduceRows);
  const int blocks = (C + gpu::kWarp - 1) / gpu::kWarp;
  norm_param_grad_kernel<T><<<blocks, block, 0, stream>>>(dweight, dbias, dout, inp, mean, rstd, N, C);
  return cudaGetLastError();
}

// Row n = blockIdx.x * kRowsPerBlock + threadIdx.y, lane threadIdx.x strides over C.
__device__ __forceinline__ int64_t warp_row() { return blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.y; }

int row_blocks(int64_t N) { return static_cast<int>((N + kRowsPerBlock - 1) / kRowsPerBlock); }

template <typename T>
__global__ void layernorm_forward_kernel(T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                                         const T* __restrict__ inp, const T* __restrict__ weight,
                                         const T* __restrict__ bias, int64_t N, int C, float eps) {
  const int64_t n = warp_row();
  if (n >= N) return;
  const T* x = inp + n * C;
  float sum = 0;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp) sum += to_float(x[c]);
  const float m = warp_sum(sum) / C;
  // Two passes (the row stays in L1/L2): the one-pass E[x^2] - m^2 cancels badly when |m| >> std.
  float var = 0;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp) {
    const float d = to_float(x[c]) - m;
    var += d * d;
  }
  const float r = 1.0f / sqrtf(warp_sum(var) / C + eps);
  T* y = out + n * C;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp)
    y[c] = from_float<T>((to_float(x[c]) - m) * r * to_float(weight[c]) + to_float(bias[c]));
  if (threadIdx.x == 0) {
    mean[n] = m;
    rstd[n] = r;
  }
}

template <typename T>
__global__ void layernorm_input_grad_kernel(T* __restrict__ dinp, const T* __restrict__ dout,
                                            const T* __restrict__ inp, const T* __restrict__ weight,
                                            const float* __restrict__ mean, const float* __restrict__ rstd, int64_t N,
                                            int C) {
  const int64_t n = warp_row();
  if (n >= N) return;
  const T* x = inp + n * C;
  const T* dy = dout + n * C;
  const float m = mean[n], r = rstd[n];
  float dnorm_sum = 0, dnorm_xhat_sum = 0;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp) {
    const float dnorm = to_float(dy[c]) * to_float(weight[c]);
    dnorm_sum += dnorm;
    dnorm_xhat_sum += dnorm * (to_float(x[c]) - m) * r;
  }
  const float dnorm_mean = warp_sum(dnorm_sum) / C;
  const float dnorm_xhat_mean = warp_sum(dnorm_xhat_sum) / C;
  T* dx = dinp + n * C;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp) {
    const float xhat = (to_float(x[c]) - m) * r;
    const float g = (to_float(dy[c]) * to_float(weight[c]) - dnorm_mean - xhat * dnorm_xhat_mean) * r;
    dx[c] = from_float<T>(to_float(dx[c]) + g);
  }
}

template <typename T>
__global__ void rmsnorm_forward_kernel(T* __restrict__ out, float* __restrict__ rstd, const T* __restrict__ inp,
                                       const T* __restrict__ weight, int64_t N, int C, float eps) {
  const int64_t n = warp_row();
  if (n >= N) return;
  const T* x = inp + n * C;
  float sum_sq = 0;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp) {
    const float v = to_float(x[c]);
    sum_sq += v * v;
  }
  const float r = 1.0f / sqrtf(warp_sum(sum_sq) / C + eps);
  T* y = out + n * C;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp) y[c] = from_float<T>(to_float(x[c]) * r * to_float(weight[c]));
  if (threadIdx.x == 0) rstd[n] = r;
}

template <typename T>
__global__ void rmsnorm_input_grad_kernel(T* __restrict__ dinp, const T* __restrict__ dout,
                                          const T* __restrict__ inp, const T* __restrict__ weight,
                                          const float* __restrict__ rstd, int64_t N, int C) {
  const int64_t n = warp_row();
  if (n >= N) return;
  const T* x = inp + n * C;
  const T* dy = dout + n * C;
  const float r = rstd[n];
  float dnorm_xhat_sum = 0;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp)
    dnorm_xhat_sum += to_float(dy[c]) * to_float(weight[c]) * to_float(x[c]) * r;
  const float dnorm_xhat_mean = warp_sum(dnorm_xhat_sum) / C;
  T* dx = dinp + n * C;
  for (int c = threadIdx.x; c < C; c += gpu::kWarp) {
    const float xhat = to_float(x[c]) * r;
    const float g = (to_float(dy[c]) * to_float(weight[c]) - xhat * dnorm_xhat_mean) * r;
    dx[c] = from_float<T>(to_float(dx[c]) + g);
  }
}

const dim3 kRowBlock(gpu::kWarp, kRowsPerBlock);

}  // namespace

template <typename T>
cudaError_t launch_layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                                     const T* bias, int64_t N, int C, float eps, cudaStream_t stream) {
  layernorm_forward_kernel<T><<<row_blocks(N), kRowBlock, 0, stream>>>(out, mean, rstd, inp, weight, bias, N, C, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp,
                                      const T* weight, const float* mean, const float* rstd, int64_t N, int C,
                                      cudaStream_t stream) {
  layernorm_input_grad_kernel<T><<<row_blocks(N), kRowBlock, 0, stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  return launch_norm_param_grad(dweight, dbias, dout, inp, mean, rstd, N, C, stream);
}

template <typename T>
cudaError_t launch_rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, int64_t N, int C, float eps,
                                   cudaStream_t stream) {
  rmsnorm_forward_kernel<T><<<row_blocks(N), kRowBlock, 0, stream>>>(out, rstd, inp, weight, N, C, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight,
                                    const float* rstd, int64_t N, int C, cudaStream_t stream) {
  rmsnorm_input_grad_kernel<T><<<row_blocks(N), kRowBlock, 0, stream>>>(dinp, dout, inp, weight, rstd, N, C);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  return launch_norm_param_grad<T>(dweight, nullptr, dout, inp, nullptr, rstd, N, C, stream);
}

#define DILATRON_INSTANTIATE(T)                                                                                   \
  template cudaError_t launch_layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int, \
                                                   float, cudaStream_t);                                          \
  template cudaError_t launch_layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*, const float*, \
                                                    const float*, int64_t, int, cudaStream_t);                     \
  template cudaError_t launch_rmsnorm_forward<T>(T*, float*, const T*, const T*, int64_t, int, float, cudaStream_t); \
  template cudaError_t launch_rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int64_t,  \
                                                  int, cudaStream_t);
DILATRON_INSTANTIATE(float)
DILATRON_INSTANTIATE(__nv_bfloat16)
#undef DILATRON_INSTANTIATE

}  // namespace dilatron::detail
