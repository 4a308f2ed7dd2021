// LayerNorm over the last dimension: out = (x - mean) * rstd * weight + bias, eps 1e-5.
// Shapes: inp, out, dinp, dout (N, C); weight, bias (C); mean, rstd (N) saved for backward.
// Gradient rule: dinp, dweight, dbias are accumulated (+=).
#pragma once

#include <cstdint>

namespace dilatron {

inline constexpr double kNormEps = 1e-5;

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t N, int C);

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                        const T* weight, const T* mean, const T* rstd, int64_t N, int C);

}  // namespace dilatron
