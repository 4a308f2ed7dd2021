// Token and learned position embeddings. Both gradients are sums in a fixed order (no atomics),
// so they are bitwise reproducible. The token-embedding gradient sums each token's positions
// (token_buckets' layout, layers_cuda.h) in two stages where a token is frequent: the positions of
// a bucket longer than one segment are summed a segment at a time into fp32 partials, which a
// second kernel adds in order; a short bucket is summed directly. So a frequent token (a space in
// byte-level text, "the" in English) takes as many blocks as it has segments instead of one
// block's lone threads reading thousands of rows one after another.
#include <cuda/std/limits>

#include "model/cuda_math.cuh"
#include "model/cuda_pack.cuh"
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

// The device view of token_buckets' layout.
struct BucketView : TokenBucketLayout<const int32_t> {
  int32_t segment_rows;

  BucketView(const int32_t* layout, const TokenBuckets& b, int64_t N)
      : TokenBucketLayout<const int32_t>(layout, b, N), segment_rows(b.segment_rows) {}
};

// Sum of dout's rows positions[i], i in [begin, end), in order, over columns [c0, c0 + kVec).
template <typename T, int kVec>
__device__ __forceinline__ void sum_rows(float (&sum)[kVec], const T* __restrict__ dout,
                                         const int32_t* __restrict__ positions, int32_t begin, int32_t end, int C,
                                         int c0) {
#pragma unroll 4
  for (int32_t i = begin; i < end; ++i) {
    const gpu::Pack<T, kVec> dy = gpu::load_pack<kVec>(dout + static_cast<int64_t>(positions[i]) * C + c0);
#pragma unroll
    for (int j = 0; j < kVec; ++j) sum[j] += to_float(dy.v[j]);
  }
}

// Thread (x) of block (s, y) owns columns c0 = (y * blockDim.x + x) * kVec .. + kVec.
__device__ __forceinline__ int column_of_thread(int kVec) { return (blockIdx.y * blockDim.x + threadIdx.x) * kVec; }

// Stage 1, block (segment s, column group): partials[s] = the segment's rows summed.
template <typename T, int kVec>
__global__ void token_embedding_segment_kernel(float* __restrict__ partials, const T* __restrict__ dout,
                                               BucketView view, int C) {
  const int c0 = column_of_thread(kVec);
  if (c0 >= C) return;
  const int32_t s = blockIdx.x, b = view.segment_bucket[s];
  const int32_t begin = view.begin[b] + (s - view.first_segment[b]) * view.segment_rows;
  const int32_t end = min(begin + view.segment_rows, view.begin[b + 1]);
  float sum[kVec] = {};
  sum_rows<T, kVec>(sum, dout, view.positions, begin, end, C, c0);
#pragma unroll
  for (int j = 0; j < kVec; ++j) partials[static_cast<int64_t>(s) * C + c0 + j] = sum[j];
}

// Stage 2, block (bucket b, column group): dwte[token] += the bucket's segment partials in
// order, or its rows in order when it is short.
template <typename T, int kVec>
__global__ void token_embedding_bucket_kernel(float* __restrict__ dwte, const float* __restrict__ partials,
                                              const T* __restrict__ dout, BucketView view, int C) {
  const int c0 = column_of_thread(kVec);
  if (c0 >= C) return;
  const int32_t b = blockIdx.x;
  float sum[kVec] = {};
  if (view.first_segment[b + 1] == view.first_segment[b]) {
    sum_rows<T, kVec>(sum, dout, view.positions, view.begin[b], view.begin[b + 1], C, c0);
  } else {
    for (int32_t s = view.first_segment[b]; s < view.first_segment[b + 1]; ++s)
#pragma unroll
      for (int j = 0; j < kVec; ++j) sum[j] += partials[static_cast<int64_t>(s) * C + c0 + j];
  }
  float* row = dwte + static_cast<int64_t>(view.token[b]) * C + c0;
#pragma unroll
  for (int j = 0; j < kVec; ++j) row[j] += sum[j];
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

template <typename T, int kVec>
cudaError_t token_embedding_backward(float* dwte, const T* dout, const int32_t* layout, const TokenBuckets& buckets,
                                     int64_t N, int C, float* partials, cudaStream_t stream) {
  const BucketView view(layout, buckets, N);
  const int groups = (C + kVec - 1) / kVec;
  const int threads = groups < gpu::kThreads ? (groups + gpu::kWarp - 1) / gpu::kWarp * gpu::kWarp : gpu::kThreads;
  const unsigned column_blocks = static_cast<unsigned>((groups + threads - 1) / threads);
  if (buckets.segments > 0) {
    token_embedding_segment_kernel<T, kVec><<<dim3(static_cast<unsigned>(buckets.segments), column_blocks), threads,
                                              0, stream>>>(partials, dout, view, C);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  token_embedding_bucket_kernel<T, kVec><<<dim3(static_cast<unsigned>(buckets.buckets), column_blocks), threads, 0,
                                           stream>>>(dwte, partials, dout, view, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_token_embedding_backward(float* dwte, const T* dout, const int32_t* layout,
                                            const TokenBuckets& buckets, int64_t N, int C, float* partials,
                                            cudaStream_t stream) {
  if (gpu::rows_aligned_16(dout, C))
    return token_embedding_backward<T, gpu::kPack16<T>>(dwte, dout, layout, buckets, N, C, partials, stream);
  return token_embedding_backward<T, 1>(dwte, dout, layout, buckets, N, C, partials, stream);
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
  template cudaError_t launch_token_embedding_backward<T>(float*, const T*, const int32_t*, const TokenBuckets&, \
                                                          int64_t, int, float*, cudaStream_t);                   \
  template cudaError_t launch_position_embedding_forward<T>(T*, const T*, int, int, int, int, cudaStream_t);     \
  template cudaError_t launch_position_embedding_backward<T>(float*, const T*, int, int, int, int, cudaStream_t);
DILATRON_INSTANTIATE(float)
DILATRON_INSTANTIATE(__nv_bfloat16)
#undef DILATRON_INSTANTIATE

}  // namespace dilatron::detail
