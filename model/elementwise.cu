// GELU (tanh approximation), the residual add and fp32 -> T conversion: grid-stride loops over n elements, fp32 math.
#include "model/cuda_math.cuh"
#include "model/layers_cuda_kernels.h"

namespace dilatron::detail {
namespace {

using gpu::from_float;
using gpu::to_float;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// 0.5 (1 + tanh(u)) = sigmoid(2u), as model/gelu.cc; expf (not __expf) keeps fp32 accuracy.
__device__ __forceinline__ float half_one_plus_tanh(float u) { return 1.0f / (1.0f + expf(-2.0f * u)); }

template <typename T>
__global__ void gelu_forward_kernel(T* __restrict__ out, const T* __restrict__ inp, int64_t n) {
  for (int64_t i = gpu::global_thread(); i < n; i += gpu::grid_threads()) {
    const float x = to_float(inp[i]);
    out[i] = from_float<T>(x * half_one_plus_tanh(kSqrt2OverPi * (x + kCubic * x * x * x)));
  }
}

template <typename T>
__global__ void gelu_backward_kernel(T* __restrict__ dinp, const T* __restrict__ inp, const T* __restrict__ dout,
                                     int64_t n) {
  for (int64_t i = gpu::global_thread(); i < n; i += gpu::grid_threads()) {
    const float x = to_float(inp[i]);
    // With s = 0.5 (1 + tanh(u)): d s / d u = 2 s (1 - s).
    const float s = half_one_plus_tanh(kSqrt2OverPi * (x + kCubic * x * x * x));
    const float local = s + x * 2.0f * s * (1.0f - s) * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    dinp[i] = from_float<T>(to_float(dinp[i]) + local * to_float(dout[i]));
  }
}

template <typename T>
__global__ void residual_forward_kernel(T* __restrict__ x, const T* __restrict__ branch, int64_t n) {
  for (int64_t i = gpu::global_thread(); i < n; i += gpu::grid_threads())
    x[i] = from_float<T>(to_float(x[i]) + to_float(branch[i]));
}

template <typename T>
__global__ void convert_from_float_kernel(T* __restrict__ out, const float* __restrict__ inp, int64_t n) {
  for (int64_t i = gpu::global_thread(); i < n; i += gpu::grid_threads()) out[i] = from_float<T>(inp[i]);
}

}  // namespace

template <typename T>
cudaError_t launch_convert_from_float(T* out, const float* inp, int64_t n, cudaStream_t stream) {
  convert_from_float_kernel<T><<<gpu::blocks_for(n, gpu::kThreads), gpu::kThreads, 0, stream>>>(out, inp, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_gelu_forward(T* out, const T* inp, int64_t n, cudaStream_t stream) {
  gelu_forward_kernel<T><<<gpu::blocks_for(n, gpu::kThreads), gpu::kThreads, 0, stream>>>(out, inp, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n, cudaStream_t stream) {
  gelu_backward_kernel<T><<<gpu::blocks_for(n, gpu::kThreads), gpu::kThreads, 0, stream>>>(dinp, inp, dout, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_residual_forward(T* x, const T* branch, int64_t n, cudaStream_t stream) {
  residual_forward_kernel<T><<<gpu::blocks_for(n, gpu::kThreads), gpu::kThreads, 0, stream>>>(x, branch, n);
  return cudaGetLastError();
}

#define DILATRON_INSTANTIATE(T)                                                                     \
  template cudaError_t launch_gelu_forward<T>(T*, const T*, int64_t, cudaStream_t);                 \
  template cudaError_t launch_gelu_backward<T>(T*, const T*, const T*, int64_t, cudaStream_t);      \
  template cudaError_t launch_residual_forward<T>(T*, const T*, int64_t, cudaStream_t);               \
  template cudaError_t launch_convert_from_float<T>(T*, const float*, int64_t, cudaStream_t);
DILATRON_INSTANTIATE(float)
DILATRON_INSTANTIATE(__nv_bfloat16)
#undef DILATRON_INSTANTIATE

}  // namespace dilatron::detail
