// Exact dilated attention over a whole sequence on the CPU (docs/attention.md gives the
// semantics, with a worked example). Every dilated segment of a head is one call of the block
// primitive (attention/block_attention.h) on rows read in place with stride r*H*D; longnet
// merges the branches of a head by their log-sum-exp, head_groups gives each head one branch.
//
// Layouts: q, k, v, out, dq, dk, dv are (B, n, H, D), contiguous; lse is (B, H, n). Positions a
// head does not cover get out = 0 and lse = -inf. In head_groups mode lse is the branch's
// log-sum-exp, without the 1/G output scale. Gradient rule: dq, dk, dv are accumulated (+=).
// Memory beyond inputs and outputs: one segment's (w/r, D) partial output and a score tile.
#pragma once

#include <cstdint>
#include <utility>

#include "attention/dense_attention.h"
#include "attention/dilated_spec.h"
#include "attention/sequence_attention.h"

namespace dilatron {

// out (B, n, H, D), lse (B, H, n). Throws InputError (key "attention") for a spec that does
// not fit n and H.
template <typename T>
void dilated_attention_forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v, int B, int64_t n,
                               int H, int D, const DilatedSpec& spec);

// dq, dk, dv (B, n, H, D) += gradients of sum(dout * out); out and lse from the forward. The
// gradient is exact, including the dependence of the longnet merge weights on q and k.
template <typename T>
void dilated_attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const attention_lse_t<T>* lse,
                                const T* q, const T* k, const T* v, int B, int64_t n, int H, int D,
                                const DilatedSpec& spec);

// Dilated attention over a sequence one rank holds whole (Tc is the whole n).
template <typename T>
class DilatedSequenceAttention final : public SequenceAttention<T> {
 public:
  explicit DilatedSequenceAttention(DilatedSpec spec) : spec_(std::move(spec)) {}

  void forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v, int B, int Tc, int H,
               int D) override {
    dilated_attention_forward(out, lse, q, k, v, B, Tc, H, D, spec_);
  }
  void backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const attention_lse_t<T>* lse, const T* q,
                const T* k, const T* v, int B, int Tc, int H, int D) override {
    dilated_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, B, Tc, H, D, spec_);
  }

 private:
  DilatedSpec spec_;
};

}  // namespace dilatron
