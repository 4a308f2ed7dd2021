#include "attention/dense_attention.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "attention/block_attention.h"
#include "core/check.h"

namespace dilatron {
namespace {

void check_dims(const AttentionDims& d) {
  DILATRON_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.D > 0, "attention dims B={} T={} H={} D={}", d.B, d.T, d.H,
                 d.D);
}

// One (batch, head) of a (B, T, H, D) tensor: T rows, H*D apart.
template <typename T>
RowBlock<T> head_rows(T* base, const AttentionDims& d, int b, int h) {
  const int64_t stride = static_cast<int64_t>(d.H) * d.D;
  return {base + b * d.T * stride + h * d.D, stride};
}

double attention_scale(const AttentionDims& d) { return 1.0 / std::sqrt(static_cast<double>(d.D)); }

BlockMask mask_of(const AttentionDims& d) { return d.causal ? BlockMask::causal : BlockMask::none; }

}  // namespace

template <typename T>
void dense_attention_forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v,
                             const AttentionDims& d) {
  check_dims(d);
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h)
      block_attention_forward<T>(head_rows(out, d, b, h), lse + (static_cast<int64_t>(b) * d.H + h) * d.T, 1,
                                 head_rows(q, d, b, h), head_rows(k, d, b, h), head_rows(v, d, b, h), d.T, d.T, d.D,
                                 attention_scale(d), mask_of(d));
}

template <typename T>
void dense_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const attention_lse_t<T>* lse,
                              const T* q, const T* k, const T* v, const AttentionDims& d) {
  check_dims(d);
  std::vector<attention_lse_t<T>> delta(d.T);
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h) {
      attention_row_delta<T>(delta.data(), head_rows(dout, d, b, h), head_rows(out, d, b, h), d.T, d.D);
      block_attention_backward<T>(head_rows(dq, d, b, h), head_rows(dk, d, b, h), head_rows(dv, d, b, h),
                                  head_rows(dout, d, b, h), delta.data(),
                                  lse + (static_cast<int64_t>(b) * d.H + h) * d.T, 1, head_rows(q, d, b, h),
                                  head_rows(k, d, b, h), head_rows(v, d, b, h), d.T, d.T, d.D, attention_scale(d),
                                  mask_of(d));
    }
}

template void dense_attention_forward<float>(float*, float*, const float*, const float*, const float*,
                                             const AttentionDims&);
template void dense_attention_forward<double>(double*, double*, const double*, const double*, const double*,
                                              const AttentionDims&);
template void dense_attention_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                              const float*, const float*, const float*, const AttentionDims&);
template void dense_attention_backward<double>(double*, double*, double*, const double*, const double*,
                                               const double*, const double*, const double*, const double*,
                                               const AttentionDims&);

}  // namespace dilatron
