// Rotary position embedding in place on (B, Tc, H, D): one thread per rotated pair.
#include "model/cuda_math.cuh"
#include "model/layers_cuda_kernels.h"

namespace dilatron::detail {
namespace {

using gpu::from_float;
using gpu::to_float;

template <typename T>
__global__ void rotary_kernel(T* __restrict__ x, int B, int Tc, int H, int D, int pos0, double theta,
                              int direction) {
  const int half = D / 2;
  const int64_t pairs = static_cast<int64_t>(B) * Tc * H * half;
  for (int64_t p = gpu::global_thread(); p < pairs; p += gpu::grid_threads()) {
    const int i = static_cast<int>(p % half);
    const int t = static_cast<int>((p / (static_cast<int64_t>(half) * H)) % Tc);
    // Angles in double, as model/rotary.cc: positions reach 1e5+ and float angles lose low bits.
    const double angle = (pos0 + t) * pow(theta, -2.0 * i / D);
    double sin_d, cos_d;
    sincos(angle, &sin_d, &cos_d);
    const float c = static_cast<float>(cos_d);
    const float s = static_cast<float>(direction * sin_d);
    T* pair = x + 2 * p;
    const float x0 = to_float(pair[0]), x1 = to_float(pair[1]);
    pair[0] = from_float<T>(x0 * c - x1 * s);
    pair[1] = from_float<T>(x0 * s + x1 * c);
  }
}

}  // namespace

template <typename T>
cudaError_t launch_rotary(T* x, int B, int Tc, int H, int D, int pos0, double theta, int direction,
                          cudaStream_t stream) {
  const int64_t pairs = static_cast<int64_t>(B) * Tc * H * (D / 2);
  rotary_kernel<T><<<gpu::blocks_for(pairs, gpu::kThreads), gpu::kThreads, 0, stream>>>(x, B, Tc, H, D, pos0,
                                                                                         theta, direction);
  return cudaGetLastError();
}

template cudaError_t launch_rotary<float>(float*, int, int, int, int, int, double, int, cudaStream_t);
template cudaError_t launch_rotary<__nv_bfloat16>(__nv_bfloat16*, int, int, int, int, int, double, int,
                                                  cudaStream_t);

}  // namespace dilatron::detail
