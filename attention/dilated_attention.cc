#include "attention/dilated_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention/block_attention.h"
#include "core/check.h"

namespace dilatron {
namespace {

// One dilated segment of one head: rows first, first + r, ..., first + (count - 1) r.
struct DilatedRows {
  int64_t first;
  int64_t step;
  int64_t count;
};

// Calls visit(branch, rows) for every dilated segment head h takes part in.
template <class Visit>
void for_each_segment(const DilatedSpec& spec, int64_t n, int H, int h, Visit&& visit) {
  const int G = static_cast<int>(spec.branches.size());
  for (int i = 0; i < G; ++i) {
    if (!branch_heads(spec, i, H).contains(h)) continue;
    const auto [w, r] = spec.branches[i];
    const int64_t offset = head_offset(spec, i, h);
    for (int64_t start = 0; start < n; start += w) visit(i, DilatedRows{start + offset, r, w / r});
  }
}

// The 1/G factor of head_groups; 1 for longnet.
double output_scale(const DilatedSpec& spec) {
  return spec.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(spec.branches.size()) : 1.0;
}

// Addresses of one head's dilated rows inside a (B, n, H, D) tensor of batch element b.
struct HeadRows {
  int64_t n;
  int H, D;
  int b, h;
  template <typename P>
  RowBlock<P> at(P* base, const DilatedRows& rows) const {
    const int64_t row = static_cast<int64_t>(H) * D;
    return RowBlock<P>{base + (b * n + rows.first) * row + static_cast<int64_t>(h) * D, rows.step * row};
  }
};

int64_t longest_segment(const DilatedSpec& spec) {
  int64_t most = 0;
  for (const auto& [w, r] : spec.branches) most = std::max(most, w / r);
  return most;
}

}  // namespace

template <typename T>
void dilated_attention_forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v, int B, int64_t n,
                               int H, int D, const DilatedSpec& spec) {
  using Lse = attention_lse_t<T>;
  DILATRON_CHECK(B > 0 && n > 0 && H > 0 && D > 0, "dilated attention dims B={} n={} H={} D={}", B, n, H, D);
  validate_dilated_spec(spec, n, H);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const BlockMask mask = spec.causal ? BlockMask::causal : BlockMask::none;
  const T out_scale = static_cast<T>(output_scale(spec));
  const int64_t row = static_cast<int64_t>(H) * D;
  // One segment's partial result before it is merged into out: (w/r, D) and (w/r).
  std::vector<T> partial(static_cast<size_t>(longest_segment(spec)) * D);
  std::vector<Lse> partial_lse(static_cast<size_t>(longest_segment(spec)));
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const HeadRows head{n, H, D, b, h};
      Lse* lse_bh = lse + (static_cast<int64_t>(b) * H + h) * n;
      for (int64_t p = 0; p < n; ++p) {
        T* o = out + (b * n + p) * row + static_cast<int64_t>(h) * D;
        std::fill(o, o + D, T(0));
        lse_bh[p] = -std::numeric_limits<Lse>::infinity();
      }
      for_each_segment(spec, n, H, h, [&](int, const DilatedRows& rows) {
        const RowBlock<T> o = head.at(out, rows);
        const auto Q = head.at(q, rows), K = head.at(k, rows), V = head.at(v, rows);
        if (spec.mode == DilatedMode::longnet) {
          block_attention_forward<T>({partial.data(), D}, partial_lse.data(), 1, Q, K, V, rows.count, rows.count,
                                     D, scale, mask);
          merge_attention_partial<T>(o, lse_bh + rows.first, rows.step, {partial.data(), D}, partial_lse.data(), 1,
                                     rows.count, D);
        } else {
          block_attention_forward<T>(o, lse_bh + rows.first, rows.step, Q, K, V, rows.count, rows.count, D, scale,
                                     mask);
          for (int64_t i = 0; i < rows.count; ++i)
            for (int d = 0; d < D; ++d) o.base[i * o.stride + d] *= out_scale;
        }
      });
    }
  }
}

template <typename T>
void dilated_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const attention_lse_t<T>* lse,
                                const T* q, const T* k, const T* v, int B, int64_t n, int H, int D,
                                const DilatedSpec& spec) {
  using Lse = attention_lse_t<T>;
  DILATRON_CHECK(B > 0 && n > 0 && H > 0 && D > 0, "dilated attention dims B={} n={} H={} D={}", B, n, H, D);
  validate_dilated_spec(spec, n, H);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const BlockMask mask = spec.causal ? BlockMask::causal : BlockMask::none;
  const T out_scale = static_cast<T>(output_scale(spec));
  // delta = rowsum(dout * out) of the final output; in head_groups the branch sees dout / G
  // and produced G * out, so the same delta holds there.
  std::vector<Lse> delta(static_cast<size_t>(longest_segment(spec)));
  // head_groups: the gradient reaching the branch output, dout / G, as (w/r, D).
  std::vector<T> branch_dout(spec.mode == DilatedMode::head_groups ? delta.size() * D : 0);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const HeadRows head{n, H, D, b, h};
      const Lse* lse_bh = lse + (static_cast<int64_t>(b) * H + h) * n;
      for_each_segment(spec, n, H, h, [&](int, const DilatedRows& rows) {
        const auto dO = head.at(dout, rows);
        attention_row_delta<T>(delta.data(), dO, head.at(out, rows), rows.count, D);
        RowBlock<const T> branch_dO = dO;
        if (spec.mode == DilatedMode::head_groups) {
          for (int64_t i = 0; i < rows.count; ++i)
            for (int d = 0; d < D; ++d) branch_dout[i * D + d] = dO.base[i * dO.stride + d] * out_scale;
          branch_dO = {branch_dout.data(), D};
        }
        block_attention_backward<T>(head.at(dq, rows), head.at(dk, rows), head.at(dv, rows), branch_dO,
                                    delta.data(), lse_bh + rows.first, rows.step, head.at(q, rows),
                                    head.at(k, rows), head.at(v, rows), rows.count, rows.count, D, scale, mask);
      });
    }
  }
}

#define DILATRON_INSTANTIATE_DILATED_ATTENTION(T)                                                                  \
  template void dilated_attention_forward<T>(T*, attention_lse_t<T>*, const T*, const T*, const T*, int, int64_t, \
                                             int, int, const DilatedSpec&);                                       \
  template void dilated_attention_backward<T>(T*, T*, T*, const T*, const T*, const attention_lse_t<T>*,          \
                                              const T*, const T*, const T*, int, int64_t, int, int,               \
                                              const DilatedSpec&);

DILATRON_INSTANTIATE_DILATED_ATTENTION(float)
DILATRON_INSTANTIATE_DILATED_ATTENTION(double)

}  // namespace dilatron
