#include "model/embedding.h"

#include <algorithm>

#include "core/check.h"

namespace dilatron {

template <typename T>
void token_embedding_forward(T* out, const int32_t* tokens, const T* wte, int64_t N, int C, int V) {
  for (int64_t n = 0; n < N; ++n) {
    const int32_t token = tokens[n];
    DILATRON_CHECK_INPUT(token >= 0 && token < V,
                         "token {} at position {} is outside the vocabulary [0, {})", token, n, V);
    std::copy_n(wte + static_cast<int64_t>(token) * C, C, out + n * C);
  }
}

template <typename T>
void token_embedding_backward(T* dwte, const T* dout, const int32_t* tokens, int64_t N, int C) {
  for (int64_t n = 0; n < N; ++n) {
    T* row = dwte + static_cast<int64_t>(tokens[n]) * C;
    const T* d = dout + n * C;
    for (int c = 0; c < C; ++c) row[c] += d[c];
  }
}

template <typename T>
void position_embedding_forward(T* x, const T* wpe, int B, int Tc, int C, int pos0) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tc; ++t) {
      T* row = x + (static_cast<int64_t>(b) * Tc + t) * C;
      const T* pos = wpe + static_cast<int64_t>(pos0 + t) * C;
      for (int c = 0; c < C; ++c) row[c] += pos[c];
    }
}

template <typename T>
void position_embedding_backward(T* dwpe, const T* dx, int B, int Tc, int C, int pos0) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tc; ++t) {
      const T* d = dx + (static_cast<int64_t>(b) * Tc + t) * C;
      T* pos = dwpe + static_cast<int64_t>(pos0 + t) * C;
      for (int c = 0; c < C; ++c) pos[c] += d[c];
    }
}

#define DILATRON_INSTANTIATE(T)                                                                \
  template void token_embedding_forward<T>(T*, const int32_t*, const T*, int64_t, int, int);   \
  template void token_embedding_backward<T>(T*, const T*, const int32_t*, int64_t, int);       \
  template void position_embedding_forward<T>(T*, const T*, int, int, int, int);               \
  template void position_embedding_backward<T>(T*, const T*, int, int, int, int);
DILATRON_INSTANTIATE(float)
DILATRON_INSTANTIATE(double)
#undef DILATRON_INSTANTIATE

}  // namespace dilatron
