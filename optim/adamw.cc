#include "optim/adamw.h"

#include <cmath>

#include "core/check.h"

namespace dilatron {
namespace detail {

AdamWScalars adamw_scalars(const AdamWStep& s) {
  DILATRON_CHECK(s.step >= 1, "AdamW step is 1-based, got {}", s.step);
  DILATRON_CHECK(s.beta1 >= 0.0f && s.beta1 < 1.0f && s.beta2 >= 0.0f && s.beta2 < 1.0f,
                 "AdamW betas must lie in [0, 1), got {} {}", s.beta1, s.beta2);
  const double step = static_cast<double>(s.step);
  return {s.lr,
          s.beta1,
          s.beta2,
          1.0f - s.beta1,
          1.0f - s.beta2,
          s.eps,
          s.weight_decay,
          static_cast<float>(1.0 - std::pow(static_cast<double>(s.beta1), step)),
          static_cast<float>(1.0 - std::pow(static_cast<double>(s.beta2), step))};
}

}  // namespace detail

void adamw_update_cpu(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s) {
  const detail::AdamWScalars c = detail::adamw_scalars(s);
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float mi = c.beta1 * m[i] + c.one_minus_beta1 * g;
    const float vi = c.beta2 * v[i] + c.one_minus_beta2 * (g * g);
    const float m_hat = mi / c.bias_correction1;
    const float v_hat = vi / c.bias_correction2;
    const float p = param[i];
    param[i] = p - c.lr * (m_hat / (std::sqrt(v_hat) + c.eps) + c.weight_decay * p);
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace dilatron
