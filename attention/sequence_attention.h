// The seam between the model and attention. The model hands over q, k, v of the tokens this
// rank holds and gets back the output and the log-sum-exp, without knowing whether the pattern
// is dense or dilated, or whether the sequence is split across ranks.
//
// Layouts: q, k, v, out, dq, dk, dv are (B, Tc, H, D), contiguous, for this rank's chunk of Tc
// tokens; lse is (B, H, Tc). Gradient rule: dq, dk, dv are accumulated (+=).
#pragma once

#include "attention/dense_attention.h"

namespace dilatron {

template <typename T>
class SequenceAttention {
 public:
  virtual ~SequenceAttention() = default;

  virtual void forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v, int B, int Tc,
                       int H, int D) = 0;
  virtual void backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const attention_lse_t<T>* lse,
                        const T* q, const T* k, const T* v, int B, int Tc, int H, int D) = 0;
};

// Dense attention over a sequence one rank holds whole.
template <typename T>
class DenseSequenceAttention final : public SequenceAttention<T> {
 public:
  explicit DenseSequenceAttention(bool causal) : causal_(causal) {}

  void forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v, int B, int Tc, int H,
               int D) override {
    dense_attention_forward(out, lse, q, k, v, AttentionDims{B, Tc, H, D, causal_});
  }
  void backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const attention_lse_t<T>* lse, const T* q,
                const T* k, const T* v, int B, int Tc, int H, int D) override {
    dense_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, AttentionDims{B, Tc, H, D, causal_});
  }

 private:
  bool causal_;
};

}  // namespace dilatron
