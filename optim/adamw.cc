#include "optim/adamw.h"

#include <algorithm>
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

std::vector<AdamWChunk> adamw_chunks(const std::vector<AdamWSegment>& segments, int64_t chunk_elements) {
  DILATRON_CHECK(chunk_elements > 0 && chunk_elements % 4 == 0 && chunk_elements <= INT32_MAX,
                 "AdamW chunk size must be a positive multiple of 4, got {}", chunk_elements);
  std::vector<AdamWSegment> sorted;
  for (const AdamWSegment& seg : segments) {
    DILATRON_CHECK(seg.begin >= 0 && seg.length >= 0, "AdamW segment [{}, +{}) has a negative begin or length",
                   seg.begin, seg.length);
    if (seg.length > 0) sorted.push_back(seg);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const AdamWSegment& a, const AdamWSegment& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    DILATRON_CHECK(sorted[i - 1].begin + sorted[i - 1].length <= sorted[i].begin,
                   "AdamW segments [{}, +{}) and [{}, +{}) overlap", sorted[i - 1].begin, sorted[i - 1].length,
                   sorted[i].begin, sorted[i].length);
  }
  std::vector<AdamWChunk> chunks;
  for (const AdamWSegment& seg : segments) {
    const int64_t end = seg.begin + seg.length;
    for (int64_t begin = seg.begin; begin < end;) {
      const int64_t next_cut = (begin / chunk_elements + 1) * chunk_elements;
      const int64_t stop = std::min(end, next_cut);
      chunks.push_back({begin, static_cast<int32_t>(stop - begin), seg.weight_decay});
      begin = stop;
    }
  }
  return chunks;
}

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
