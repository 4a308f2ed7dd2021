// CUDA versions of the layers in model/{layernorm,rmsnorm,gelu,embedding,rotary,residual}.h:
// same names, same semantics and "+=" gradient rule, device pointers, a trailing stream.
// T is float or __nv_bfloat16 for activations AND weights (bf16 weights and activations in
// compute); arithmetic is fp32, mean/rstd are fp32, parameter gradients (dweight, dbias,
// dwte, dwpe) accumulate in fp32, activation gradients are T. Kernels are queued on the stream;
// sizes are checked on the host (dilatron::Error), launch failures surface as dilatron::Error.
// Determinism: every parameter gradient is summed in a fixed order (no atomics).
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "model/token_buckets.h"

namespace dilatron {

// inp, out, dinp, dout (N, C); weight, bias (C) in T; mean, rstd (N) fp32; eps kNormEps. The
// backwards take scratch for their parameter-gradient partials (2 x 128 x C floats at most) from
// the process's caching allocator (core/device_allocator.h) on `stream`.
template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias, int64_t N,
                       int C, cudaStream_t stream);
template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t N, int C, cudaStream_t stream);

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, int64_t N, int C, cudaStream_t stream);
template <typename T>
void rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight, const float* rstd,
                      int64_t N, int C, cudaStream_t stream);

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n, cudaStream_t stream);
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n, cudaStream_t stream);

// out (n) = inp rounded to T (nearest even for bf16): the compute copy of fp32 master weights.
template <typename T>
void convert_from_float(T* out, const float* inp, int64_t n, cudaStream_t stream);

// x += branch; its backward is the identity (see model/residual.h).
template <typename T>
void residual_forward(T* x, const T* branch, int64_t n, cudaStream_t stream);

// out (N, C) = wte[tokens], wte (V, C). Tokens live on the device, so they are not checked: a
// token outside [0, V) gives a NaN row here and is skipped by the backward.
template <typename T>
void token_embedding_forward(T* out, const int32_t* tokens, const T* wte, int64_t N, int C, int V,
                             cudaStream_t stream);
// dwte (V, C) fp32 += dout (N, C) summed per token over its positions in order (a long bucket:
// per segment, then the segments in order): no atomics, so bitwise reproducible (resume and
// rank-count parity depend on it). layout: device copy of token_buckets' layout for these N rows
// (model/token_buckets.h).
template <typename T>
void token_embedding_backward(float* dwte, const T* dout, const int32_t* layout, const TokenBuckets& buckets,
                              int64_t N, int C, cudaStream_t stream);
// x (B, Tc, C) += wpe[pos0 + t]: the caller checks pos0 + Tc <= T_max.
template <typename T>
void position_embedding_forward(T* x, const T* wpe, int B, int Tc, int C, int pos0, cudaStream_t stream);
// dwpe[pos0 + t] (fp32) += sum over b of dx[b, t].
template <typename T>
void position_embedding_backward(float* dwpe, const T* dx, int B, int Tc, int C, int pos0, cudaStream_t stream);

// In place on x (B, Tc, H, D), D even; see model/rotary.h.
template <typename T>
void rotary_forward(T* x, int B, int Tc, int H, int D, int pos0, double theta, cudaStream_t stream);
template <typename T>
void rotary_backward(T* dx, int B, int Tc, int H, int D, int pos0, double theta, cudaStream_t stream);

}  // namespace dilatron
#endif
