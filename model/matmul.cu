// Bias gradient of the linear layer: dbias (OC) += column sums of dout (N, OC), for `batch` such
// layers in one launch (layer b's dout at dout + b * dout_stride, its dbias at dbias + b * OC). A
// block owns 32 adjacent columns of one layer (one warp reads 32 consecutive elements of a row);
// its 32 warps stride over the rows and combine their fp32 partial sums in shared memory in a fixed
// order, so the result is deterministic.
#include <cuda_bf16.h>

#include "core/device_type.h"
#include "model/matmul_cuda.h"

namespace dilatron {
namespace {

constexpr int kColumns = 32;
constexpr int kRowLanes = 32;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__global__ void add_column_sums_kernel(float* __restrict__ dbias, const T* __restrict__ dout, int64_t N, int OC,
                                       int64_t dout_stride) {
  __shared__ float partial[kRowLanes][kColumns];
  dout += blockIdx.y * dout_stride;
  dbias += static_cast<int64_t>(blockIdx.y) * OC;
  const int column = blockIdx.x * kColumns + threadIdx.x;
  float sum = 0.0f;
  if (column < OC) {
    for (int64_t n = threadIdx.y; n < N; n += kRowLanes) sum += to_float(dout[n * OC + column]);
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && column < OC) {
    float total = 0.0f;
    for (int lane = 0; lane < kRowLanes; ++lane) total += partial[lane][threadIdx.x];
    dbias[column] += total;
  }
}

template <typename T>
cudaError_t add_column_sums(float* dbias, const T* dout, int64_t N, int OC, int batch, int64_t dout_stride,
                            cudaStream_t stream) {
  const dim3 block(kColumns, kRowLanes);
  const dim3 grid((OC + kColumns - 1) / kColumns, batch);
  add_column_sums_kernel<<<grid, block, 0, stream>>>(dbias, dout, N, OC, dout_stride);
  return cudaGetLastError();
}

}  // namespace

namespace detail {

cudaError_t launch_add_column_sums(float* dbias, const bf16* dout, int64_t N, int OC, int batch, int64_t dout_stride,
                                   cudaStream_t stream) {
  return add_column_sums(dbias, device_ptr(dout), N, OC, batch, dout_stride, stream);
}
cudaError_t launch_add_column_sums(float* dbias, const float* dout, int64_t N, int OC, int batch, int64_t dout_stride,
                                   cudaStream_t stream) {
  return add_column_sums(dbias, dout, N, OC, batch, dout_stride, stream);
}

}  // namespace detail
}  // namespace dilatron
