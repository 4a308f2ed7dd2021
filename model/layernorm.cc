#include "model/layernorm.h"

#include <cmath>

namespace dilatron {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t N, int C) {
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    T sum = 0;
    for (int c = 0; c < C; ++c) sum += x[c];
    const T m = sum / C;
    T var = 0;
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    const T r = T(1) / std::sqrt(var / C + static_cast<T>(kNormEps));
    T* y = out + n * C;
    for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * r * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = r;
  }
}

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                        const T* weight, const T* mean, const T* rstd, int64_t N, int C) {
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    const T* dy = dout + n * C;
    const T m = mean[n], r = rstd[n];
    // Means over c of dnorm = dy * weight and of dnorm * xhat.
    T dnorm_mean = 0, dnorm_xhat_mean = 0;
    for (int c = 0; c < C; ++c) {
      const T dnorm = dy[c] * weight[c];
      dnorm_mean += dnorm;
      dnorm_xhat_mean += dnorm * (x[c] - m) * r;
    }
    dnorm_mean /= C;
    dnorm_xhat_mean /= C;
    T* dx = dinp + n * C;
    for (int c = 0; c < C; ++c) {
      const T xhat = (x[c] - m) * r;
      dbias[c] += dy[c];
      dweight[c] += xhat * dy[c];
      dx[c] += (dy[c] * weight[c] - dnorm_mean - xhat * dnorm_xhat_mean) * r;
    }
  }
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*,
                                       const float*, int64_t, int);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int64_t, int);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, int64_t, int);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int64_t,
                                         int);

}  // namespace dilatron
