// Kernel launchers of model/*.cu, for model/layers_cuda.cc (and a timing in layers_gpu_test.cc).
// They return the launch status instead of throwing because .cu files cannot include
// core/check.h (nvcc 13 rejects fmt 9).
// Arguments are those of the public functions in model/layers_cuda.h, already checked.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "model/token_buckets.h"

namespace dilatron::detail {

template <typename T>
cudaError_t launch_layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                                     const T* bias, int64_t N, int C, float eps, cudaStream_t stream);
// The norm backwards reduce their parameter gradients over N through fp32 partials in `scratch`,
// a device buffer of norm_param_grad_scratch_floats(N, C) floats that nothing else uses until the
// launched kernels have run (stream order).
int64_t norm_param_grad_scratch_floats(int64_t N, int C);
template <typename T>
cudaError_t launch_layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp,
                                      const T* weight, const float* mean, const float* rstd, int64_t N, int C,
                                      float* scratch, cudaStream_t stream);
template <typename T>
cudaError_t launch_rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, int64_t N, int C, float eps,
                                   cudaStream_t stream);
template <typename T>
cudaError_t launch_rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight,
                                    const float* rstd, int64_t N, int C, float* scratch, cudaStream_t stream);
// The parameter-gradient half of the norm backwards alone (dbias == nullptr: none; mean ==
// nullptr: RMSNorm), for the GPU test's timing of it.
template <typename T>
cudaError_t launch_norm_param_grad(float* dweight, float* dbias, const T* dout, const T* inp, const float* mean,
                                   const float* rstd, int64_t N, int C, float* scratch, cudaStream_t stream);

template <typename T>
cudaError_t launch_convert_from_float(T* out, const float* inp, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t launch_gelu_forward(T* out, const T* inp, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t launch_gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n, cudaStream_t stream);
template <typename T>
cudaError_t launch_residual_forward(T* x, const T* branch, int64_t n, cudaStream_t stream);

template <typename T>
cudaError_t launch_token_embedding_forward(T* out, const int32_t* tokens, const T* wte, int64_t N, int C, int V,
                                           cudaStream_t stream);
// partials: a device buffer of buckets.segments * C floats (none when there are no segments).
template <typename T>
cudaError_t launch_token_embedding_backward(float* dwte, const T* dout, const int32_t* layout,
                                            const TokenBuckets& buckets, int64_t N, int C, float* partials,
                                            cudaStream_t stream);
template <typename T>
cudaError_t launch_position_embedding_forward(T* x, const T* wpe, int B, int Tc, int C, int pos0,
                                              cudaStream_t stream);
template <typename T>
cudaError_t launch_position_embedding_backward(float* dwpe, const T* dx, int B, int Tc, int C, int pos0,
                                               cudaStream_t stream);

// direction +1 rotates by +angle (forward), -1 by -angle (backward).
template <typename T>
cudaError_t launch_rotary(T* x, int B, int Tc, int H, int D, int pos0, double theta, int direction,
                          cudaStream_t stream);

}  // namespace dilatron::detail
#endif
