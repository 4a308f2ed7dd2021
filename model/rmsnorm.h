// RMSNorm over the last dimension: out = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps),
// eps 1e-5 (kNormEps). Shapes: inp, out, dinp, dout (N, C); weight (C); rstd (N) saved.
// Gradient rule: dinp and dweight are accumulated (+=).
#pragma once

#include <cstdint>

#include "model/layernorm.h"

namespace dilatron {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int64_t N, int C);

template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int64_t N, int C);

}  // namespace dilatron
