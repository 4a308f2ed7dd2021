// GELU, tanh approximation (as GPT-2): out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// Elementwise over n values. Gradient rule: dinp is accumulated (+=).
#pragma once

#include <cstdint>

namespace dilatron {

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n);

template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n);

}  // namespace dilatron
