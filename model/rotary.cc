#include "model/rotary.h"

#include <cmath>
#include <cstdint>

#include "core/check.h"

namespace dilatron {
namespace {

// direction +1 rotates by +angle (forward), -1 by -angle (backward).
template <typename T>
void rotate(T* x, int B, int Tc, int H, int D, int pos0, double theta, int direction) {
  DILATRON_CHECK(D % 2 == 0, "rotary embedding needs an even head dimension, got {}", D);
  const int64_t token_stride = static_cast<int64_t>(H) * D;
  for (int t = 0; t < Tc; ++t) {
    for (int i = 0; i < D / 2; ++i) {
      // Angles in double: positions reach 1e5+ and float angles would lose the low bits.
      const double angle = (pos0 + t) * std::pow(theta, -2.0 * i / D);
      const T c = static_cast<T>(std::cos(angle));
      const T s = static_cast<T>(direction * std::sin(angle));
      for (int b = 0; b < B; ++b) {
        T* token = x + (static_cast<int64_t>(b) * Tc + t) * token_stride + 2 * i;
        for (int h = 0; h < H; ++h) {
          T* pair = token + static_cast<int64_t>(h) * D;
          const T x0 = pair[0], x1 = pair[1];
          pair[0] = x0 * c - x1 * s;
          pair[1] = x0 * s + x1 * c;
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void rotary_forward(T* x, int B, int Tc, int H, int D, int pos0, double theta) {
  rotate(x, B, Tc, H, D, pos0, theta, +1);
}

template <typename T>
void rotary_backward(T* dx, int B, int Tc, int H, int D, int pos0, double theta) {
  rotate(dx, B, Tc, H, D, pos0, theta, -1);
}

template void rotary_forward<float>(float*, int, int, int, int, int, double);
template void rotary_forward<double>(double*, int, int, int, int, int, double);
template void rotary_backward<float>(float*, int, int, int, int, int, double);
template void rotary_backward<double>(double*, int, int, int, int, int, double);

}  // namespace dilatron
