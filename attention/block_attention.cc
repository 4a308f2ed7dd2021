#include "attention/block_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Dense>

#include "core/check.h"

namespace dilatron {
namespace {

// Query rows per score tile, as in dense attention: BLAS-sized, and the (kQueryTile, nk)
// tile stays in cache for the segment lengths dilated attention uses.
constexpr int64_t kQueryTile = 64;

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using StridedRows = Eigen::Map<RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using ConstStridedRows = Eigen::Map<const RowMatrix<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using Tile = Eigen::Map<RowMatrix<T>>;

template <typename T>
ConstStridedRows<T> rows_of(RowBlock<const T> block, int64_t first, int64_t count, int D) {
  return ConstStridedRows<T>(block.base + first * block.stride, count, D, Eigen::OuterStride<>(block.stride));
}

template <typename T>
StridedRows<T> rows_of(RowBlock<T> block, int64_t first, int64_t count, int D) {
  return StridedRows<T>(block.base + first * block.stride, count, D, Eigen::OuterStride<>(block.stride));
}

// Per-thread scratch that only grows, so steady-state calls do not allocate.
template <typename T>
T* scratch(int which, size_t n) {
  thread_local std::vector<T> buffers[2];
  if (buffers[which].size() < n) buffers[which].resize(n);
  return buffers[which].data();
}

void check_block(int64_t nq, int64_t nk, int D, BlockMask mask) {
  DILATRON_CHECK(nq >= 0 && nk >= 0 && D > 0, "block attention nq={} nk={} D={}", nq, nk, D);
  DILATRON_CHECK(mask == BlockMask::none || nq == nk, "causal block needs nq == nk, got {} and {}", nq, nk);
}

// Keys that any row of the tile [i0, i0 + rows) sees, and how many query row i sees.
int64_t tile_keys(BlockMask mask, int64_t i0, int64_t rows, int64_t nk) {
  return mask == BlockMask::causal ? i0 + rows : nk;
}
int64_t row_keys(BlockMask mask, int64_t i, int64_t nk) { return mask == BlockMask::causal ? i + 1 : nk; }

// Turns the scores of one row (in place) into p_j = exp(s_j - lse), zero where masked. A row
// whose final lse is -inf saw no key anywhere, so all its p are 0 (exp(-inf - -inf) is NaN).
template <typename T>
void scores_to_probabilities(T* row, int64_t keys, int64_t valid, attention_lse_t<T> lse) {
  if (lse == -std::numeric_limits<attention_lse_t<T>>::infinity()) valid = 0;
  for (int64_t j = 0; j < valid; ++j) row[j] = static_cast<T>(std::exp(row[j] - lse));
  std::fill(row + valid, row + keys, T(0));
}

}  // namespace

template <typename T>
void block_attention_forward(RowBlock<T> out, attention_lse_t<T>* lse, int64_t lse_stride, RowBlock<const T> q,
                             RowBlock<const T> k, RowBlock<const T> v, int64_t nq, int64_t nk, int D, double scale,
                             BlockMask mask) {
  using Lse = attention_lse_t<T>;
  check_block(nq, nk, D, mask);
  if (nk == 0) {
    for (int64_t i = 0; i < nq; ++i) {
      std::fill(out.base + i * out.stride, out.base + i * out.stride + D, T(0));
      lse[i * lse_stride] = -std::numeric_limits<Lse>::infinity();
    }
    return;
  }
  const T s = static_cast<T>(scale);
  T* tile = scratch<T>(0, static_cast<size_t>(std::min(kQueryTile, nq) * nk));  // (rows, keys)
  for (int64_t i0 = 0; i0 < nq; i0 += kQueryTile) {
    const int64_t rows = std::min(kQueryTile, nq - i0);
    const int64_t keys = tile_keys(mask, i0, rows, nk);
    Tile<T> S(tile, rows, keys);
    S.noalias() = s * (rows_of(q, i0, rows, D) * rows_of(k, 0, keys, D).transpose());
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t valid = row_keys(mask, i0 + r, nk);
      T* row = tile + r * keys;
      const T max = *std::max_element(row, row + valid);
      Lse sum = 0;
      for (int64_t j = 0; j < valid; ++j) sum += std::exp(static_cast<Lse>(row[j] - max));
      const Lse row_lse = max + std::log(sum);
      lse[(i0 + r) * lse_stride] = row_lse;
      scores_to_probabilities<T>(row, keys, valid, row_lse);
    }
    rows_of(out, i0, rows, D).noalias() = S * rows_of(v, 0, keys, D);
  }
}

template <typename T>
void block_attention_backward(RowBlock<T> dq, RowBlock<T> dk, RowBlock<T> dv, RowBlock<const T> dout,
                              const attention_lse_t<T>* delta, const attention_lse_t<T>* lse, int64_t lse_stride,
                              RowBlock<const T> q, RowBlock<const T> k, RowBlock<const T> v, int64_t nq, int64_t nk,
                              int D, double scale, BlockMask mask) {
  check_block(nq, nk, D, mask);
  if (nk == 0 || nq == 0) return;
  const T s = static_cast<T>(scale);
  const size_t tile_size = static_cast<size_t>(std::min(kQueryTile, nq) * nk);
  T* p_tile = scratch<T>(0, tile_size);   // (rows, keys)
  T* dp_tile = scratch<T>(1, tile_size);  // (rows, keys)
  for (int64_t i0 = 0; i0 < nq; i0 += kQueryTile) {
    const int64_t rows = std::min(kQueryTile, nq - i0);
    const int64_t keys = tile_keys(mask, i0, rows, nk);
    auto Q = rows_of(q, i0, rows, D);
    auto dO = rows_of(dout, i0, rows, D);
    auto K = rows_of(k, 0, keys, D);
    auto V = rows_of(v, 0, keys, D);
    Tile<T> P(p_tile, rows, keys);
    Tile<T> dP(dp_tile, rows, keys);
    P.noalias() = s * (Q * K.transpose());
    for (int64_t r = 0; r < rows; ++r)
      scores_to_probabilities<T>(p_tile + r * keys, keys, row_keys(mask, i0 + r, nk), lse[(i0 + r) * lse_stride]);
    rows_of(dv, 0, keys, D).noalias() += P.transpose() * dO;
    dP.noalias() = dO * V.transpose();
    // ds_ij = p_ij (dp_ij - delta_i), written over dP.
    for (int64_t r = 0; r < rows; ++r) {
      const T row_delta = static_cast<T>(delta[i0 + r]);
      const T* p = p_tile + r * keys;
      T* ds = dp_tile + r * keys;
      for (int64_t j = 0; j < keys; ++j) ds[j] = p[j] * (ds[j] - row_delta);
    }
    rows_of(dq, i0, rows, D).noalias() += s * (dP * K);
    rows_of(dk, 0, keys, D).noalias() += s * (dP.transpose() * Q);
  }
}

template <typename T>
void attention_row_delta(attention_lse_t<T>* delta, RowBlock<const T> dout, RowBlock<const T> out, int64_t nq,
                         int D) {
  using Lse = attention_lse_t<T>;
  for (int64_t i = 0; i < nq; ++i) {
    const T* a = dout.base + i * dout.stride;
    const T* b = out.base + i * out.stride;
    Lse sum = 0;
    for (int d = 0; d < D; ++d) sum += static_cast<Lse>(a[d]) * static_cast<Lse>(b[d]);
    delta[i] = sum;
  }
}

template <typename T>
void merge_attention_partial(RowBlock<T> out_a, attention_lse_t<T>* lse_a, int64_t lse_a_stride,
                             RowBlock<const T> out_b, const attention_lse_t<T>* lse_b, int64_t lse_b_stride,
                             int64_t rows, int D) {
  using Lse = attention_lse_t<T>;
  constexpr Lse kEmpty = -std::numeric_limits<Lse>::infinity();
  for (int64_t i = 0; i < rows; ++i) {
    const Lse la = lse_a[i * lse_a_stride];
    const Lse lb = lse_b[i * lse_b_stride];
    T* oa = out_a.base + i * out_a.stride;
    const T* ob = out_b.base + i * out_b.stride;
    if (lb == kEmpty) continue;  // b saw no key: a is already the union.
    if (la == kEmpty) {
      std::copy(ob, ob + D, oa);
      lse_a[i * lse_a_stride] = lb;
      continue;
    }
    const Lse hi = std::max(la, lb);
    const Lse merged = hi + std::log1p(std::exp(std::min(la, lb) - hi));
    const T wa = static_cast<T>(std::exp(la - merged));
    const T wb = static_cast<T>(std::exp(lb - merged));
    for (int d = 0; d < D; ++d) oa[d] = oa[d] * wa + ob[d] * wb;
    lse_a[i * lse_a_stride] = merged;
  }
}

#define DILATRON_INSTANTIATE_BLOCK_ATTENTION(T)                                                                    \
  template void block_attention_forward<T>(RowBlock<T>, attention_lse_t<T>*, int64_t, RowBlock<const T>,          \
                                           RowBlock<const T>, RowBlock<const T>, int64_t, int64_t, int, double,   \
                                           BlockMask);                                                            \
  template void block_attention_backward<T>(RowBlock<T>, RowBlock<T>, RowBlock<T>, RowBlock<const T>,             \
                                            const attention_lse_t<T>*, const attention_lse_t<T>*, int64_t,        \
                                            RowBlock<const T>, RowBlock<const T>, RowBlock<const T>, int64_t,     \
                                            int64_t, int, double, BlockMask);                                     \
  template void attention_row_delta<T>(attention_lse_t<T>*, RowBlock<const T>, RowBlock<const T>, int64_t, int); \
  template void merge_attention_partial<T>(RowBlock<T>, attention_lse_t<T>*, int64_t, RowBlock<const T>,          \
                                           const attention_lse_t<T>*, int64_t, int64_t, int);

DILATRON_INSTANTIATE_BLOCK_ATTENTION(float)
DILATRON_INSTANTIATE_BLOCK_ATTENTION(double)

}  // namespace dilatron
