#include "attention/dense_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Dense>

#include "core/check.h"

namespace dilatron {
namespace {

// Query rows per score tile: large enough for BLAS efficiency, small enough that the
// (kQueryBlock, T) tile stays in cache.
constexpr int kQueryBlock = 64;

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
// One head's rows inside a (B, T, H, D) tensor: row stride H*D.
template <typename T>
using HeadView = Eigen::Map<RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using ConstHeadView = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using Tile = Eigen::Map<RowMatrix<T>>;

void check_dims(const AttentionDims& d) {
  DILATRON_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.D > 0, "attention dims B={} T={} H={} D={}",
                 d.B, d.T, d.H, d.D);
}

// Per-thread scratch that only grows, so steady-state calls do not allocate.
template <typename T>
T* scratch(int which, size_t n) {
  thread_local std::vector<T> buffers[2];
  if (buffers[which].size() < n) buffers[which].resize(n);
  return buffers[which].data();
}

// Keys visible to the query rows [i0, i0 + rows): all keys, or those up to the last row.
int visible_keys(const AttentionDims& d, int i0, int rows) { return d.causal ? i0 + rows : d.T; }

// Turns the scores of query row i (in place) into p_ij = exp(s_ij - lse_i), zero where masked.
template <typename T>
void scores_to_probabilities(T* row, int keys, int valid, attention_lse_t<T> lse) {
  for (int j = 0; j < valid; ++j) row[j] = static_cast<T>(std::exp(row[j] - lse));
  std::fill(row + valid, row + keys, T(0));
}

}  // namespace

template <typename T>
void dense_attention_forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v,
                             const AttentionDims& d) {
  check_dims(d);
  using Lse = attention_lse_t<T>;
  const int64_t stride = static_cast<int64_t>(d.H) * d.D;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d.D)));
  T* tile = scratch<T>(0, static_cast<size_t>(kQueryBlock) * d.T);  // (rows, keys)
  for (int b = 0; b < d.B; ++b) {
    for (int h = 0; h < d.H; ++h) {
      const int64_t base = b * d.T * stride + h * d.D;
      ConstHeadView<T> K(k + base, d.T, d.D, Eigen::OuterStride<>(stride));
      ConstHeadView<T> V(v + base, d.T, d.D, Eigen::OuterStride<>(stride));
      Lse* lse_bh = lse + (static_cast<int64_t>(b) * d.H + h) * d.T;
      for (int i0 = 0; i0 < d.T; i0 += kQueryBlock) {
        const int rows = std::min(kQueryBlock, d.T - i0);
        const int keys = visible_keys(d, i0, rows);
        ConstHeadView<T> Q(q + base + i0 * stride, rows, d.D, Eigen::OuterStride<>(stride));
        HeadView<T> O(out + base + i0 * stride, rows, d.D, Eigen::OuterStride<>(stride));
        Tile<T> S(tile, rows, keys);
        S.noalias() = scale * (Q * K.topRows(keys).transpose());
        for (int r = 0; r < rows; ++r) {
          const int valid = d.causal ? i0 + r + 1 : keys;
          T* row = tile + static_cast<int64_t>(r) * keys;
          T max = *std::max_element(row, row + valid);
          Lse sum = 0;
          for (int j = 0; j < valid; ++j) sum += std::exp(static_cast<Lse>(row[j] - max));
          const Lse row_lse = max + std::log(sum);
          lse_bh[i0 + r] = row_lse;
          scores_to_probabilities<T>(row, keys, valid, row_lse);
        }
        O.noalias() = S * V.topRows(keys);
      }
    }
  }
}

template <typename T>
void dense_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out,
                              const attention_lse_t<T>* lse, const T* q, const T* k, const T* v,
                              const AttentionDims& d) {
  check_dims(d);
  const int64_t stride = static_cast<int64_t>(d.H) * d.D;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(d.D)));
  T* p_tile = scratch<T>(0, static_cast<size_t>(kQueryBlock) * d.T);   // (rows, keys)
  T* dp_tile = scratch<T>(1, static_cast<size_t>(kQueryBlock) * d.T);  // (rows, keys)
  for (int b = 0; b < d.B; ++b) {
    for (int h = 0; h < d.H; ++h) {
      const int64_t base = b * d.T * stride + h * d.D;
      ConstHeadView<T> K(k + base, d.T, d.D, Eigen::OuterStride<>(stride));
      ConstHeadView<T> V(v + base, d.T, d.D, Eigen::OuterStride<>(stride));
      HeadView<T> dK(dk + base, d.T, d.D, Eigen::OuterStride<>(stride));
      HeadView<T> dV(dv + base, d.T, d.D, Eigen::OuterStride<>(stride));
      const attention_lse_t<T>* lse_bh = lse + (static_cast<int64_t>(b) * d.H + h) * d.T;
      for (int i0 = 0; i0 < d.T; i0 += kQueryBlock) {
        const int rows = std::min(kQueryBlock, d.T - i0);
        const int keys = visible_keys(d, i0, rows);
        const int64_t at = base + i0 * stride;
        ConstHeadView<T> Q(q + at, rows, d.D, Eigen::OuterStride<>(stride));
        ConstHeadView<T> dO(dout + at, rows, d.D, Eigen::OuterStride<>(stride));
        ConstHeadView<T> O(out + at, rows, d.D, Eigen::OuterStride<>(stride));
        HeadView<T> dQ(dq + at, rows, d.D, Eigen::OuterStride<>(stride));
        Tile<T> P(p_tile, rows, keys);
        Tile<T> dP(dp_tile, rows, keys);
        P.noalias() = scale * (Q * K.topRows(keys).transpose());
        for (int r = 0; r < rows; ++r) {
          const int valid = d.causal ? i0 + r + 1 : keys;
          scores_to_probabilities<T>(p_tile + static_cast<int64_t>(r) * keys, keys, valid,
                                     lse_bh[i0 + r]);
        }
        dV.topRows(keys).noalias() += P.transpose() * dO;
        dP.noalias() = dO * V.topRows(keys).transpose();
        // ds_ij = p_ij (dp_ij - D_i), D_i = dout_i . out_i; written over dP.
        for (int r = 0; r < rows; ++r) {
          const T row_dot = dO.row(r).dot(O.row(r));
          T* p = p_tile + static_cast<int64_t>(r) * keys;
          T* ds = dp_tile + static_cast<int64_t>(r) * keys;
          for (int j = 0; j < keys; ++j) ds[j] = p[j] * (ds[j] - row_dot);
        }
        dQ.noalias() += scale * (dP * K.topRows(keys));
        dK.topRows(keys).noalias() += scale * (dP.transpose() * Q);
      }
    }
  }
}

template void dense_attention_forward<float>(float*, float*, const float*, const float*,
                                             const float*, const AttentionDims&);
template void dense_attention_forward<double>(double*, double*, const double*, const double*,
                                              const double*, const AttentionDims&);
template void dense_attention_backward<float>(float*, float*, float*, const float*, const float*,
                                              const float*, const float*, const float*,
                                              const float*, const AttentionDims&);
template void dense_attention_backward<double>(double*, double*, double*, const double*,
                                               const double*, const double*, const double*,
                                               const double*, const double*,
                                               const AttentionDims&);

}  // namespace dilatron
