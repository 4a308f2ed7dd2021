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
// Memory: scores are computed for a block of query rows at a time, (kQueryBlock, T) per
// thread; a T x T matrix is never formed.
#pragma once

#include <type_traits>

namespace dilatron {

struct AttentionDims {
  int B, T, H, D;
  bool causal;
};

// Precision of the saved log-sum-exp: float for fp32 inputs, double for fp64 inputs so
// that fp64 gradient checks are not limited by a rounded lse.
template <typename T>
using attention_lse_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

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
