// Residual connection x += branch (n values). Its backward is the identity: under the
// "+=" gradient rule every layer adds its input gradient into the one residual-stream
// gradient buffer, so no residual_backward is needed.
#pragma once

#include <cstdint>

namespace dilatron {

template <typename T>
void residual_forward(T* x, const T* branch, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += branch[i];
}

}  // namespace dilatron
