#include "optim/grad_norm.h"

#include <algorithm>

namespace dilatron {

double sum_of_squares_cpu(const float* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return sum;
}

float clip_coefficient(double global_norm, float max_norm) {
  if (max_norm <= 0.0f) return 1.0f;
  return static_cast<float>(std::min(1.0, static_cast<double>(max_norm) / (global_norm + 1e-6)));
}

}  // namespace dilatron
