#include "model/rmsnorm.h"

#include <cmath>

namespace dilatron {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int64_t N, int C) {
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    T sum_sq = 0;
    for (int c = 0; c < C; ++c) sum_sq += x[c] * x[c];
    const T r = T(1) / std::sqrt(sum_sq / C + static_cast<T>(kNormEps));
    T* y = out + n * C;
    for (int c = 0; c < C; ++c) y[c] = x[c] * r * weight[c];
    rstd[n] = r;
  }
}

template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int64_t N, int C) {
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    const T* dy = dout + n * C;
    const T r = rstd[n];
    // d xhat_c / d x_k = r (delta_ck - xhat_c xhat_k / C), with xhat = x * r.
    T dnorm_xhat_mean = 0;
    for (int c = 0; c < C; ++c) dnorm_xhat_mean += dy[c] * weight[c] * x[c] * r;
    dnorm_xhat_mean /= C;
    T* dx = dinp + n * C;
    for (int c = 0; c < C; ++c) {
      const T xhat = x[c] * r;
      dweight[c] += xhat * dy[c];
      dx[c] += (dy[c] * weight[c] - xhat * dnorm_xhat_mean) * r;
    }
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int64_t, int);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int64_t,
                                      int);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int64_t, int);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*,
                                       const double*, const double*, int64_t, int);

}  // namespace dilatron
