#include "model/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace dilatron {

template <typename T>
void cross_entropy_forward(T* losses, T* lse, const T* logits, const int32_t* targets, int64_t N,
                           int V) {
  for (int64_t n = 0; n < N; ++n) {
    const T* row = logits + n * V;
    const T max = *std::max_element(row, row + V);
    T sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(row[v] - max);
    lse[n] = max + std::log(sum);
    const int32_t target = targets[n];
    DILATRON_CHECK_INPUT(target < V, "target {} at position {} is outside the vocabulary [0, {})",
                         target, n, V);
    losses[n] = target < 0 ? T(0) : lse[n] - row[target];
  }
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* logits, const T* lse, const int32_t* targets,
                            T dloss_weight, int64_t N, int V) {
  for (int64_t n = 0; n < N; ++n) {
    const T* row = logits + n * V;
    T* drow = dlogits + n * V;
    const int32_t target = targets[n];
    if (target < 0) {
      std::fill(drow, drow + V, T(0));
      continue;
    }
    const T row_lse = lse[n];
    for (int v = 0; v < V; ++v) drow[v] = std::exp(row[v] - row_lse) * dloss_weight;
    drow[target] -= dloss_weight;
  }
}

template void cross_entropy_forward<float>(float*, float*, const float*, const int32_t*, int64_t,
                                           int);
template void cross_entropy_forward<double>(double*, double*, const double*, const int32_t*,
                                            int64_t, int);
template void cross_entropy_backward<float>(float*, const float*, const float*, const int32_t*,
                                            float, int64_t, int);
template void cross_entropy_backward<double>(double*, const double*, const double*,
                                             const int32_t*, double, int64_t, int);

}  // namespace dilatron
