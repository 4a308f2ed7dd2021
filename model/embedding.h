// Token embedding (wte (V, C)) and learned absolute position embedding (wpe (T_max, C)).
// Gradient rule: parameter grads are accumulated (+=).
#pragma once

#include <cstdint>

namespace dilatron {

// out (N, C) = wte[tokens]; every token must lie in [0, V) (else InputError).
template <typename T>
void token_embedding_forward(T* out, const int32_t* tokens, const T* wte, int64_t N, int C, int V);

// dwte[tokens[n]] += dout[n] for dout (N, C).
template <typename T>
void token_embedding_backward(T* dwte, const T* dout, const int32_t* tokens, int64_t N, int C);

// x (B, Tc, C) += wpe[pos0 + t]: the caller checks pos0 + Tc <= T_max.
template <typename T>
void position_embedding_forward(T* x, const T* wpe, int B, int Tc, int C, int pos0);

// dwpe[pos0 + t] += sum over b of dx[b, t] for dx (B, Tc, C).
template <typename T>
void position_embedding_backward(T* dwpe, const T* dx, int B, int Tc, int C, int pos0);

}  // namespace dilatron
