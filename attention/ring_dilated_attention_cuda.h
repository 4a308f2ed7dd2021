// Ring dilated attention on the GPU: the algorithm of attention/ring_dilated_attention.h (same
// chunking, same exact result) on device buffers, behind DeviceSequenceAttention, the GPU model's
// seam. docs/attention.md ("Ring dilated attention on the GPU") has the schedule.
//
// The plan (always built, checked on the CPU by //attention:ring_dilated_attention_plan_test) says
// what this rank runs: per branch one task list for the batched block kernels
// (attention/block_attention_cuda.h) covering every (batch, head[, segment]) of the branch, and,
// for a branch whose segment spans g ranks, the transfers and computations of each ring step.
// A local branch (w <= n_local) is one launch on the chunk. A spanning branch packs this rank's
// keys and values of the branch (per head only the tokens of its residue) with the same tasks
// (task.q_* addresses the chunk, task.k_* the packed block), passes the packed blocks around the
// segment (causal: forward only) and runs one launch per ring step.
//
// Backward: the dk/dv partial of a block travels one step behind the block (computed while the
// block is held, sent with the next step's transfers), so every message of a step is issued
// before the step computes and every step has the same three transfers in the same order on every
// rank (kv, dkv, home): that order is what NCCL, whose point-to-point calls have no tags and run
// one after another, needs to match them. It is also why RingSchedule::serial can wait for every
// transfer as soon as it is issued: each is matched within its own step.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/block_attention.h"
#include "attention/block_attention_cuda.h"
#include "attention/dilated_spec.h"

namespace dilatron {

// The g ranks of one segment of a spanning branch, seen from position t (sp rank base + t).
// At step s this rank holds the packed block of position origin(s). Non-causal: a ring, every
// block visits every position. Causal: a line, the block of position u visits u, u+1, ..., g-1.
struct RingSegment {
  int g = 1, t = 0, base = 0;
  bool causal = false;

  int peer(int pos) const { return base + ((pos % g) + g) % g; }
  int next() const { return peer(t + 1); }
  int prev() const { return peer(t - 1); }
  int origin(int s) const { return t - s >= 0 ? t - s : (causal ? -1 : t - s + g); }
  bool holds(int s) const { return s >= 0 && s < g && origin(s) >= 0; }
  // The block held at step s moves on to next() for step s + 1.
  bool forwards(int s) const { return holds(s) && (causal ? t + 1 < g : s + 1 < g); }
  // The last position to hold the block of position u; it sends the block's dk/dv home.
  int last_visitor(int u) const { return causal ? g - 1 : (u - 1 + g) % g; }
  // Own block: causal within itself when causal; every other held block is entirely visible.
  BlockMask mask(int s) const { return origin(s) == t && causal ? BlockMask::causal : BlockMask::none; }
};

// One transfer: send to sp rank dst and/or receive from sp rank src; -1 where absent.
struct RingTransfer {
  int dst = -1, src = -1;
  bool any() const { return dst >= 0 || src >= 0; }
};

// Forward step s: the transfer (send the block held now to next(), receive the block of step
// s + 1 into the other buffer) is issued, then the held block is attended (merged into out, lse).
struct RingForwardStep {
  RingTransfer kv;
  bool attend = false;
  BlockMask mask = BlockMask::none;
};

// Backward step s (0..g; step g only delivers the last partials). Issued in this order:
//   kv:   as in the forward;
//   dkv:  send the (accumulated) dk/dv partial of the block held at step s-1 on with it to next();
//         receive the partial of the block held now from prev();
//   home: send a finished partial (this rank was the block's last visitor at step s-1) to the
//         block's owner; receive this rank's own finished partial.
// Then: attend (dq += into the chunk; the block's dk/dv partial := into a fresh buffer), add the
// arrived dkv partial to it, add it to this rank's dk/dv at once if `keep_own` (the block is this
// rank's and nobody else sees it), add an arrived home partial to dk/dv.
struct RingBackwardStep {
  RingTransfer kv, dkv, home;
  bool attend = false;
  BlockMask mask = BlockMask::none;
  bool keep_own = false;
};

struct RingBranchPlan {
  int branch = 0;   // index into spec.branches
  bool spanning = false;
  RingSegment segment;  // g = 1 for a local branch
  // max_B * tasks_per_batch, batch outermost (a call with B < max_B runs a prefix). Local: one task
  // per (batch, head, segment) of the chunk, queries and keys the same rows. Spanning: one per
  // (batch, head of the branch); q_* address the chunk (stride r*H*D), k_* the packed block (keys
  // (B, H_i, m, D) with the values right after them, m = n_local / r).
  std::vector<DeviceBlockTask> tasks;
  int64_t tasks_per_batch = 0;
  int rows = 0;                  // nq = nk of every task
  int64_t packed_per_batch = 0;  // spanning: elements of the packed keys per batch element, H_i * m * D
  std::vector<RingForwardStep> forward_steps;    // spanning: g steps
  std::vector<RingBackwardStep> backward_steps;  // spanning: g + 1 steps
};

struct RingPlan {
  std::vector<RingBranchPlan> branches;  // in spec order
  int64_t n_local = 0;
  // head_groups: 1/G on the output (and on the gradient reaching each branch); 1 for longnet.
  double out_scale = 1;
  int64_t max_packed_per_batch = 0;  // over the spanning branches; 0 when nothing spans
};

// The plan of sp rank `rank` of P for sequences of n tokens (this rank holds positions
// [rank * n/P, (rank + 1) * n/P)). Throws InputError for what cannot be split or run: the keys
// of RingDilatedAttention (parallel.sequence_parallel, attention.segment_lengths,
// attention.dilation_rates, attention), and "model" for D outside [1, kMaxBlockAttentionHeadDim].
RingPlan plan_ring_dilated_attention(const DilatedSpec& spec, int max_B, int64_t n, int P, int rank, int H, int D);

}  // namespace dilatron

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <memory>

#include "attention/device_sequence_attention.h"
#include "attention/ring_dilated_attention.h"
#include "comm/communicator.h"
#include "core/bf16.h"
#include "core/device_allocator.h"

namespace dilatron {

// What a call runs, for measuring how much communication the compute hides: `all` is the
// attention; the other two give wrong results and exist only to time the parts alone.
enum class RingWork { all, communication_only, compute_only };

// T is float or bf16. forward writes out, lse; backward WRITES dq, dk, dv; both are collective
// over sp_group and queue everything on `stream`, which must be sp_group's stream (set_stream is
// the caller's job; checked). Neither allocates. Host synchronisation happens only inside the
// transport (MpiCommunicator stages through host memory; NCCL never blocks the host).
template <typename T>
class RingDilatedAttentionCuda final : public DeviceSequenceAttention<T> {
 public:
  // n: the full sequence; Tc = n / sp_group.size(). Allocates every workspace here. sp_group must
  // outlive this object. schedule: see RingSchedule (attention/ring_dilated_attention.h).
  RingDilatedAttentionCuda(const DilatedSpec& spec, int max_B, int64_t n, int H, int D, Communicator& sp_group,
                           RingSchedule schedule = RingSchedule::overlap);

  void forward(T* out, float* lse, const T* q, const T* k, const T* v, int B, int Tc, int H, int D,
               cudaStream_t stream) override;
  void backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q, const T* k,
                const T* v, int B, int Tc, int H, int D, cudaStream_t stream) override;

  // Bytes this rank sent and score pairs it computed per branch, last forward / last backward.
  // K/V blocks travel as T; dk/dv partials as fp32 (so bf16's backward sends more than the CPU
  // formula's 2-byte count: see docs).
  const RingCommStats& stats() const { return stats_; }
  void set_work(RingWork work) { work_ = work; }

 private:
  void check_call(int B, int Tc, int H, int D, cudaStream_t stream) const;
  int64_t elements(int B) const { return static_cast<int64_t>(B) * plan_.n_local * H_ * D_; }
  BlockAttentionBatch batch(size_t branch, int B, BlockMask mask) const;
  bool computes() const { return work_ != RingWork::communication_only; }
  bool communicates() const { return work_ != RingWork::compute_only; }
  template <typename E>
  CommRequest transfer(const RingTransfer& x, const E* send, E* recv, int64_t count, int tag, int64_t* bytes);

  void local_forward(size_t i, float* out, float* lse, const T* q, const T* k, const T* v, int B, cudaStream_t stream);
  void spanning_forward(size_t i, float* out, float* lse, const T* q, const T* k, const T* v, int B,
                        cudaStream_t stream);
  struct BackwardArgs {
    float *dq, *dk, *dv;
    const T* dout;
    const float* lse;
    const T *q, *k, *v;
    int B;
    cudaStream_t stream;
  };
  void local_backward(size_t i, const BackwardArgs& a);
  void spanning_backward(size_t i, const BackwardArgs& a);

  RingPlan plan_;
  int max_B_, H_, D_;
  float scale_;
  Communicator& sp_group_;
  RingSchedule schedule_;
  RingCommStats stats_;
  RingWork work_ = RingWork::all;
  std::vector<DeviceArray<DeviceBlockTask>> tasks_;  // per branch, device
  DeviceArray<float> delta_;                          // (max_B, H, Tc)
  // bf16 only: out (forward) and dq (backward) share one; (max_B, Tc, H, D) each.
  DeviceArray<float> out_dq_acc_, dk_acc_, dv_acc_;
  DeviceArray<bf16> ds_scratch_;  // bf16 only: the local branches' dS (launch_block_attention_backward)
  // Spanning branches: two packed K/V blocks (T) and four packed dK/dV partials (fp32: two being
  // computed / sent, one arriving from prev, one arriving home), 2 * max_B * max_packed each.
  DeviceArray<T> kv_[2];
  DeviceArray<float> dkv_[2], dkv_in_, dkv_home_;
};

// The ring dilated attention as the model's seam; see RingDilatedAttentionCuda.
template <typename T>
std::unique_ptr<DeviceSequenceAttention<T>> make_ring_dilated_attention_cuda(
    const DilatedSpec& spec, int max_B, int64_t n, int H, int D, Communicator& sp_group,
    RingSchedule schedule = RingSchedule::overlap);

}  // namespace dilatron
#endif
