// Ring dilated attention: the sequence is split into P contiguous chunks, one per rank of a
// sequence-parallel group, and each rank gets exactly its slice of what dilated attention over
// the whole sequence (attention/dilated_attention.h) gives; docs/attention.md ("Ring dilated
// attention") has the algorithm, the schedules and the communication volume.
//
// A branch whose segment fits in a chunk (w | n_local) runs locally. A branch whose segment
// spans g = w / n_local chunks (n_local | w, r | n_local) passes each rank's sparsified keys and
// values (for each head only the tokens of the head's residue: n_local / r per head) around the
// g ranks of the segment, merging each block into the queries' (out, lse); with `causal` a block
// only travels forward (to later ranks of the segment), as earlier ranks never see it.
// Backward: dq stays local, the dk/dv partials of a block travel with it and go home at the end.
// RingSchedule::serial waits for each step's transfers before the step computes, to measure how
// much of the exchange the overlap hides.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/dense_attention.h"
#include "attention/dilated_spec.h"
#include "attention/sequence_attention.h"
#include "comm/communicator.h"

namespace dilatron {

// What one branch cost this rank in the last forward and the last backward.
struct RingBranchStats {
  bool spanning = false;      // segment spans several chunks (communicates)
  int64_t ranks_per_segment = 1;  // g = w / n_local for a spanning branch, else 1
  int64_t forward_bytes_sent = 0, backward_bytes_sent = 0;
  // Query-key score pairs this rank evaluated (a causal block of m rows counts m(m+1)/2); the
  // forward does 2*D multiply-adds per pair, the backward about 5*D (docs: compute imbalance).
  int64_t forward_score_pairs = 0, backward_score_pairs = 0;
};

struct RingCommStats {
  std::vector<RingBranchStats> branches;  // by branch index of the spec

  int64_t forward_bytes_sent() const;
  int64_t backward_bytes_sent() const;
  int64_t forward_score_pairs() const;
  int64_t backward_score_pairs() const;
};

// The documented formula for the bytes sp rank `rank` sends for branch `branch` (docs, "Ring
// dilated attention: communication volume"), for (B, H, D) inputs of `element_bytes` each.
struct RingBranchBytes {
  int64_t forward = 0, backward = 0;
};
RingBranchBytes ring_branch_bytes_formula(const DilatedSpec& spec, int branch, int64_t n, int P, int rank, int B,
                                          int H, int D, int64_t element_bytes);

// How a ring step's transfers meet its compute (config: parallel.overlap_ring). overlap: the
// transfers a step issues (the next K/V block; in the backward dk/dv partials too) are in flight
// while the step computes. serial: each is waited before the step computes, so no communication
// runs under compute and a step costs its compute plus its exchange; the difference between the
// two is the exchange the overlap hides (bench/multi_gpu.sh, "weak"). Only the order of events
// changes, so the results are bit-identical.
enum class RingSchedule { overlap, serial };

template <typename T>
class RingDilatedAttention final : public SequenceAttention<T> {
 public:
  // n: full sequence length; this rank holds positions [c * n/P, (c + 1) * n/P) with
  // c = sp_group.rank(), P = sp_group.size(). Throws InputError (keys
  // parallel.sequence_parallel, attention.segment_lengths, attention.dilation_rates) for a spec
  // that cannot be split that way. sp_group must outlive this object.
  RingDilatedAttention(DilatedSpec spec, int64_t n, Communicator& sp_group,
                       RingSchedule schedule = RingSchedule::overlap);

  // Collective over sp_group. q, k, v, out (B, Tc, H, D), lse (B, H, Tc) with Tc = n/P.
  void forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v, int B, int Tc, int H,
               int D) override;
  // Collective over sp_group. dq, dk, dv (B, Tc, H, D) += this rank's slice of the gradients.
  void backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const attention_lse_t<T>* lse, const T* q,
                const T* k, const T* v, int B, int Tc, int H, int D) override;

  const RingCommStats& stats() const { return stats_; }
  int64_t n_local() const { return n_local_; }

 private:
  void check_shapes(int Tc, int H) const;

  DilatedSpec spec_;
  int64_t n_, n_local_;
  Communicator& sp_group_;
  RingSchedule schedule_;
  RingCommStats stats_;
};

extern template class RingDilatedAttention<float>;
extern template class RingDilatedAttention<double>;

}  // namespace dilatron
