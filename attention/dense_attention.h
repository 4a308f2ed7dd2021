// Exact multi-head softmax attention on the CPU: the reference that dilated and ring
// attention are checked against, and the interface they implement.
//
// Layouts: q, k, v, out, dq, dk, dv are (B, T, H, D), contiguous; lse is (B, H, T).
// Scores are s_ij = (q_i . k_j) / sqrt(D); with `causal`, query i sees keys j <= i.
// The forward emits lse_i = log sum_j exp(s_ij) so that the backward can recompute
// p_ij = exp(s_ij - lse_i) (flash-attention style) and partial results over disjoint key
// sets can be merged later.
//
// Gradient rule: dq, dk, dv are accumulated (+=); the caller zeroes them.
// Dense attention is one block of the primitive in block_attention.h per (batch, head), so
// it shares that code's memory bound: a T x T matrix is never formed.
#pragma once

#include "attention/attention_lse.h"

namespace dilatron {

struct AttentionDims {
  int B, T, H, D;
  bool causal;
};

// out (B, T, H, D), lse (B, H, T).
template <typename T>
void dense_attention_forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v,
                             const AttentionDims& dims);

// dq, dk, dv (B, T, H, D) += gradients of sum(dout * out); out and lse from the forward.
template <typename T>
void dense_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out,
                              const attention_lse_t<T>* lse, const T* q, const T* k, const T* v,
                              const AttentionDims& dims);

}  // namespace dilatron
