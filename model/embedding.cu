// Token and learned position embeddings. The token-embedding gradient scatters rows into dwte
// with fp32 atomicAdd: repeated tokens make its summation order, and so its last bits,
// nondeterministic. The position-embedding gradient sums over the batch in a fixed order.
#include <cuda/std/limits>

#include "model/cuda_math.cuh"
#include "model/layers_cuda_kernels.h"

namespace dilatron::detail {
namespace {

using gpu::from_float;
using gpu::to_float;

// out (N, C); a token outside [0, V) yields a NaN row, since the kernel cannot throw.
template <typename T>
__global__ void token_embedding_forward_kernel(T* __restrict__ out, const int32_t* __restrict__ tokens,
                                               const T* __restrict__ wte, int64_t N, int C, int V) {
  for (int64_t i = gpu::global_thread(); i < N * C; i += gpu::grid_threads()) {
    const int32_t token = tokens[i / C];
    const int c = static_cast<int>(i % C);
    out[i] = token >= 0 && token < V ? wte[static_cast<int64_t>(token) * C + c]
                                     : from_float<T>(cuda::std::numeric_limits<float>::quiet_NaN());
  }
}

// Block (x, y): distinct token x of the buckets, channels y * blockDim.x + threadIdx.x. Each sum
// runs over the token's positions in increasing order, so the result is bitwise reproducible.
template <typename T>
__global__ void token_embedding_backward_kernel(float* __restrict__ dwte, const T* __restrict__ dout,
                                                const int32_t* __restrict__ buckets, int32_t num_buckets, int C) {
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int32_t* bucket_token = buckets;
  const int32_t* bucket_begin = buckets + num_buckets;
  const int32_t* positions = bucket_begin + num_buckets + 1;
  const int32_t b = blockIdx.x;
  float sum = 0;
  for (int32_t i = bucket_begin[b]; i < bucket_begin[b + 1]; ++i)
    sum += to_float(dout[static_cast<int64_t>(positions[i]) * C + c]);
  dwte[static_cast<int64_t>(bucket_token[b]) * C + c] += sum;
}

// x (B, Tc, C) += wpe[pos0 + t].
template <typename T>
__global__ void position_embedding_forward_kernel(T* __restrict__ x, const T* __restrict__ wpe, int B, int Tc,
                                                  int C, int pos0) {
  const int64_t n = static_cast<int64_t>(B) * Tc * C;
  for (int64_t i = gpu::global_thread(); i < n; i += gpu::grid_threads()) {
    const int c = static_cast<int>(i % C);
    const int t = static_cast<int>((i / C) % Tc);
    x[i] = from_float<T>(to_float(x[i]) + to_float(wpe[static_cast<int64_t>(pos0 + t) * C + c]));
  }
}

// One thread per (t, c) of dwpe rows pos0 .. pos0 + Tc - 1.
template <typename T>
__global__ void position_embedding_backward_kernel(float* __restrict__ dwpe, const T* __restrict__ dx, int B,
                                                   int Tc, int C, int pos0) {
  const int64_t n = static_cast<int64_t>(Tc) * C;
  for (int64_t i = gpu::global_thread(); i < n; i += gpu::grid_threads()) {
    float sum = 0;
    for (int b = 0; b < B; ++b) sum += to_float(dx[b * n + i]);
    dwpe[static_cast<int64_t>(pos0) * C + i] += sum;
  }
}

}  // namespace

template <typename T>
cudaError_t launch_token_embedding_forward(T* out, const int32_t* tokens, const T* wte, int64_t N, int C, int V,
                                           cudaStream_t stream) {
  token_embedding_forward_kernel<T><<<gpu::blocks_for(N * C, gpu::kThreads), gpu::kThreads, 0, stream>>>(
      out, tokens, wte, N, C, V);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_token_embedding_backward(float* dwte, const T* dout, const int32_t* buckets, int32_t num_buckets,
                                            int C, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(num_buckets), static_cast<unsigned>((C + gpu::kThreads - 1) / gpu::kThreads));
  token_embedding_backward_kernel<T><<<grid, gpu::kThreads, 0, stream>>>(dwte, dout, buckets, num_buckets, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_position_embedding_forward(T* x, const T* wpe, int B, int Tc, int C, int pos0,
                                              cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(B) * Tc * C;
  position_embedding_forward_kernel<T><<<gpu::blocks_for(n, gpu::kThreads), gpu::kThreads, 0, stream>>>(
      x, wpe, B, Tc, C, pos0);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_position_embedding_backward(float* dwpe, const T* dx, int B, int Tc, int C, int pos0,
                                               cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(Tc) * C;
  position_embedding_backward_kernel<T><<<gpu::blocks_for(n, gpu::kThreads), gpu::kThreads, 0, stream>>>(
      dwpe, dx, B, Tc, C, pos0);
  return cudaGetLastError();
}

#define DILATRON_INSTANTIATE(T)                                                                                  \
  template cudaError_t launch_token_embedding_forward<T>(T*, const int32_t*, const T*, int64_t, int, int,        \
                                                         cudaStream_t);                                          \
  template cudaError_t launch_token_embedding_backward<T>(float*, const T*, const int32_t*, int32_t, int,        \
                                                          cudaStream_t);                                         \
  template cudaError_t launch_position_embedding_forward<T>(T*, const T*, int, int, int, int, cudaStream_t);     \
  template cudaError_t launch_position_embedding_backward<T>(float*, const T*, int, int, int, int, cudaStream_t);
DILATRON_INSTANTIATE(float)
DILATRON_INSTANTIATE(__nv_bfloat16)
#undef DILATRON_INSTANTIATE

}  // namespace dilatron::detail
