// Two launches: a fixed grid of blocks each writes one double partial sum, then one block adds
// the partials in a fixed order. No atomics, so the result depends only on n and the data.
#include "optim/cuda_kernels.h"

namespace dilatron {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPartials = 1024;

__device__ double block_sum(double x) {
  __shared__ double warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  x = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0;
  if (warp == 0)
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
  return x;  // valid in thread 0
}

__global__ void partial_sum_of_squares_kernel(const float* __restrict__ x, int64_t n, double* __restrict__ partials) {
  double sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const double xi = x[i];
    sum += xi * xi;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

__global__ void sum_partials_kernel(const double* __restrict__ partials, int count, double* __restrict__ out) {
  double sum = 0.0;
  for (int i = threadIdx.x; i < count; i += kThreads) sum += partials[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) *out = sum;
}

__global__ void scale_kernel(float* __restrict__ x, int64_t n, float factor) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    x[i] *= factor;
}

}  // namespace

namespace detail {

cudaError_t launch_scale(float* x, int64_t n, float factor, cudaStream_t stream) {
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  scale_kernel<<<static_cast<int>(wanted < 65536 ? wanted : 65536), kThreads, 0, stream>>>(x, n, factor);
  return cudaGetLastError();
}

int sum_of_squares_partials(int64_t n) {
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  return static_cast<int>(wanted < kMaxPartials ? wanted : kMaxPartials);
}

cudaError_t launch_sum_of_squares(const float* x, int64_t n, double* partials, double* total, cudaStream_t stream) {
  const int blocks = sum_of_squares_partials(n);
  partial_sum_of_squares_kernel<<<blocks, kThreads, 0, stream>>>(x, n, partials);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(partials, blocks, total);
  return cudaGetLastError();
}

}  // namespace detail
}  // namespace dilatron
