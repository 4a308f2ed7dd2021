// The one attention primitive: a block of queries attends to a block of keys and returns the
// output and the per-row log-sum-exp; merge_attention_partial combines two such partial
// results over disjoint key sets. Dilated branches and ring steps are both built from these.
//
// Rows are addressed by a base pointer and a row stride in elements, so a dilated branch
// reads every r-th token of a (B, n, H, D) tensor in place (stride r*H*D) and a ring step
// reads a packed block (stride D) without copies.
//
// Scores s_ij = scale * (q_i . k_j). Mask `causal`: the blocks are aligned (nq == nk) and
// query i sees keys j <= i. A row that sees no key gets out = 0 and lse = -inf, never NaN.
// Gradient rule: dq, dk, dv are accumulated (+=).
#pragma once

#include <cstdint>

#include "attention/attention_lse.h"

namespace dilatron {

enum class BlockMask { none, causal };

// Where a block of rows lives: element (row i, column d) is base[i * stride + d].
template <typename T>
struct RowBlock {
  T* base;
  int64_t stride;
};

// out (nq rows), lse (nq, contiguous with lse_stride between rows) := attention of q over k, v.
template <typename T>
void block_attention_forward(RowBlock<T> out, attention_lse_t<T>* lse, int64_t lse_stride, RowBlock<const T> q,
                             RowBlock<const T> k, RowBlock<const T> v, int64_t nq, int64_t nk, int D, double scale,
                             BlockMask mask);

// The contribution of this (q block, k block) pair to the gradients of a softmax whose FINAL
// row log-sum-exp is `lse` and whose final output's rowsum(dout * out) is `delta` (both over
// all key blocks the rows saw; `delta` is contiguous, one entry per query row, while `lse`
// rows are lse_stride apart). Using the final values makes the sum over blocks the exact
// gradient of the merged attention, merge weights included.
template <typename T>
void block_attention_backward(RowBlock<T> dq, RowBlock<T> dk, RowBlock<T> dv, RowBlock<const T> dout,
                              const attention_lse_t<T>* delta, const attention_lse_t<T>* lse, int64_t lse_stride,
                              RowBlock<const T> q, RowBlock<const T> k, RowBlock<const T> v, int64_t nq, int64_t nk,
                              int D, double scale, BlockMask mask);

// delta_i = sum_d dout[i, d] * out[i, d] for nq rows (contiguous output).
template <typename T>
void attention_row_delta(attention_lse_t<T>* delta, RowBlock<const T> dout, RowBlock<const T> out, int64_t nq, int D);

// (out_a, lse_a) := the attention over the union of both key sets, in place:
// lse = max + log1p(exp(min - max)); out = out_a * exp(lse_a - lse) + out_b * exp(lse_b - lse).
// Rows where both lse are -inf stay out = 0, lse = -inf.
template <typename T>
void merge_attention_partial(RowBlock<T> out_a, attention_lse_t<T>* lse_a, int64_t lse_a_stride,
                             RowBlock<const T> out_b, const attention_lse_t<T>* lse_b, int64_t lse_b_stride,
                             int64_t rows, int D);

}  // namespace dilatron
