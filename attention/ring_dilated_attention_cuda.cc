// The plan of ring dilated attention on the GPU (always built) and, with CUDA, the
// DeviceSequenceAttention that runs it (attention/ring_dilated_attention_cuda.h).
#include "attention/ring_dilated_attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/check.h"

#ifdef DILATRON_CUDA
#include <type_traits>

#include "attention/ring_pack.h"
#include "core/cuda_check.h"
#endif

namespace dilatron {
namespace {

// Offsets in this rank's (B, Tc, H, D) chunk and (B, H, Tc) lse.
struct ChunkLayout {
  int64_t Tc;
  int H, D;
  int64_t at(int b, int64_t pos, int h) const { return ((b * Tc + pos) * H + h) * D; }
  int64_t lse_at(int b, int h, int64_t pos) const { return (static_cast<int64_t>(b) * H + h) * Tc + pos; }
};

void add_local_tasks(RingBranchPlan& p, const DilatedSpec& spec, int max_B, const ChunkLayout& L) {
  const auto [w, r] = spec.branches[p.branch];
  const HeadRange heads = branch_heads(spec, p.branch, L.H);
  p.rows = static_cast<int>(w / r);
  const int64_t stride = r * L.H * L.D;
  for (int b = 0; b < max_B; ++b)
    for (int h = heads.begin; h < heads.end; ++h)
      for (int64_t seg = 0; seg < L.Tc; seg += w) {
        const int64_t first = seg + head_offset(spec, p.branch, h);
        const int64_t at = L.at(b, first, h);
        p.tasks.push_back({at, stride, at, stride, L.lse_at(b, h, first), r, p.rows, p.rows});
      }
}

void add_spanning_tasks(RingBranchPlan& p, const DilatedSpec& spec, int max_B, const ChunkLayout& L) {
  const int64_t r = spec.branches[p.branch].dilation;
  const HeadRange heads = branch_heads(spec, p.branch, L.H);
  const int64_t m = L.Tc / r;
  p.rows = static_cast<int>(m);
  p.packed_per_batch = heads.count() * m * L.D;
  for (int b = 0; b < max_B; ++b)
    for (int h = heads.begin; h < heads.end; ++h) {
      const int64_t first = head_offset(spec, p.branch, h);
      const int64_t packed = (static_cast<int64_t>(b) * heads.count() + (h - heads.begin)) * m * L.D;
      p.tasks.push_back({L.at(b, first, h), r * L.H * L.D, packed, L.D, L.lse_at(b, h, first), r, p.rows, p.rows});
    }
}

RingTransfer kv_transfer(const RingSegment& ring, int s) {
  return {ring.forwards(s) ? ring.next() : -1, ring.holds(s + 1) ? ring.prev() : -1};
}

std::vector<RingForwardStep> forward_steps(const RingSegment& ring) {
  std::vector<RingForwardStep> steps(ring.g);
  for (int s = 0; s < ring.g; ++s) steps[s] = {kv_transfer(ring, s), ring.holds(s), ring.mask(s)};
  return steps;
}

std::vector<RingBackwardStep> backward_steps(const RingSegment& ring) {
  // This rank's own block comes home at the step after its last visitor held it.
  const int last = ring.last_visitor(ring.t);
  const int home_step = last == ring.t ? -1 : (last - ring.t + ring.g) % ring.g + 1;
  std::vector<RingBackwardStep> steps(ring.g + 1);
  for (int s = 0; s <= ring.g; ++s) {
    RingBackwardStep& st = steps[s];
    st.kv = kv_transfer(ring, s);
    const bool held_before = ring.holds(s - 1);
    if (held_before && ring.forwards(s - 1)) st.dkv.dst = ring.next();
    if (s >= 1 && ring.holds(s)) st.dkv.src = ring.prev();
    if (held_before && !ring.forwards(s - 1) && ring.origin(s - 1) != ring.t)
      st.home.dst = ring.peer(ring.origin(s - 1));
    if (s == home_step) st.home.src = ring.peer(last);
    st.attend = ring.holds(s);
    st.mask = ring.mask(s);
    st.keep_own = ring.holds(s) && !ring.forwards(s) && ring.origin(s) == ring.t;
  }
  return steps;
}

}  // namespace

RingPlan plan_ring_dilated_attention(const DilatedSpec& spec, int max_B, int64_t n, int P, int rank, int H, int D) {
  DILATRON_CHECK(max_B > 0 && H > 0 && P > 0 && rank >= 0 && rank < P,
                 "ring dilated attention dims max_B={} H={} P={} rank={}", max_B, H, P, rank);
  DILATRON_CHECK_INPUT(D >= 1 && D <= kMaxBlockAttentionHeadDim,
                       "model: the GPU attention takes head dimensions d_model / n_heads up to {}, got {}; use more "
                       "heads",
                       kMaxBlockAttentionHeadDim, D);
  DILATRON_CHECK_INPUT(n > 0 && n % P == 0,
                       "parallel.sequence_parallel: {} ranks cannot split a sequence of {} tokens into equal chunks",
                       P, n);
  const int64_t n_local = n / P;
  validate_dilated_spec(spec, n, H);
  for (const auto& [w, r] : spec.branches) {
    DILATRON_CHECK_INPUT(n_local % w == 0 || w % n_local == 0,
                         "attention.segment_lengths: segment length {} and the chunk of {} tokens per rank "
                         "(n {} / parallel.sequence_parallel {}) must divide one another",
                         w, n_local, n, P);
    DILATRON_CHECK_INPUT(w <= n_local || n_local % r == 0,
                         "attention.dilation_rates: dilation rate {} of the segment of {} tokens, which spans "
                         "several ranks, must divide the chunk of {} tokens per rank",
                         r, w, n_local);
  }
  DILATRON_CHECK_INPUT(n_local <= std::numeric_limits<int32_t>::max(),
                       "model.seq_len: a chunk of {} tokens is more than the GPU attention's int32 row counts hold",
                       n_local);
  const ChunkLayout L{n_local, H, D};
  RingPlan plan;
  plan.n_local = n_local;
  plan.out_scale = spec.mode == DilatedMode::longnet ? 1.0 : 1.0 / static_cast<double>(spec.branches.size());
  for (int i = 0; i < static_cast<int>(spec.branches.size()); ++i) {
    RingBranchPlan p;
    p.branch = i;
    p.spanning = spec.branches[i].segment_length > n_local;
    if (p.spanning) {
      const int g = static_cast<int>(spec.branches[i].segment_length / n_local);
      p.segment = RingSegment{g, rank % g, rank - rank % g, spec.causal};
      add_spanning_tasks(p, spec, max_B, L);
      p.forward_steps = forward_steps(p.segment);
      p.backward_steps = backward_steps(p.segment);
      plan.max_packed_per_batch = std::max(plan.max_packed_per_batch, p.packed_per_batch);
    } else {
      p.segment = RingSegment{1, 0, rank, spec.causal};
      add_local_tasks(p, spec, max_B, L);
    }
    p.tasks_per_batch = static_cast<int64_t>(p.tasks.size()) / max_B;
    plan.branches.push_back(std::move(p));
  }
  return plan;
}

#ifdef DILATRON_CUDA
namespace {

// Tags keep the message kinds of one branch apart for MPI; NCCL matches by issue order, which
// the step structure keeps the same on both ends.
enum MessageKind { kv_forward = 0, kv_backward = 1, dkv_next = 2, dkv_home = 3, kinds = 4 };
int message_tag(size_t branch, MessageKind kind) { return 16 + static_cast<int>((branch * kinds + kind) % 32000); }

int64_t score_pairs(int64_t rows, BlockMask mask) {
  return mask == BlockMask::causal ? rows * (rows + 1) / 2 : rows * rows;
}

// The fp32 tensor an output accumulates in: the output itself for fp32, else the workspace.
template <typename T>
float* accumulator(T* out, const DeviceArray<float>& workspace) {
  if constexpr (std::is_same_v<T, float>) return out;
  else return workspace.data();
}

}  // namespace

template <typename T>
RingDilatedAttentionCuda<T>::RingDilatedAttentionCuda(const DilatedSpec& spec, int max_B, int64_t n, int H, int D,
                                                      Communicator& sp_group, RingSchedule schedule)
    : plan_(plan_ring_dilated_attention(spec, max_B, n, sp_group.size(), sp_group.rank(), H, D)), max_B_(max_B),
      H_(H), D_(D), scale_(static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)))), sp_group_(sp_group),
      schedule_(schedule) {
  for (const RingBranchPlan& p : plan_.branches) {
    DeviceArray<DeviceBlockTask> tasks(static_cast<int64_t>(p.tasks.size()), nullptr);
    DILATRON_CUDA_CHECK(
        cudaMemcpy(tasks.data(), p.tasks.data(), p.tasks.size() * sizeof(DeviceBlockTask), cudaMemcpyHostToDevice));
    tasks_.push_back(std::move(tasks));
    RingBranchStats st;
    st.spanning = p.spanning;
    st.ranks_per_segment = p.segment.g;
    stats_.branches.push_back(st);
  }
  delta_ = DeviceArray<float>(static_cast<int64_t>(max_B) * H * plan_.n_local, nullptr);
  if constexpr (!std::is_same_v<T, float>) {
    for (DeviceArray<float>* acc : {&out_dq_acc_, &dk_acc_, &dv_acc_})
      *acc = DeviceArray<float>(elements(max_B), nullptr);
    // The local branches' backward keeps dS for dQ (launch_block_attention_backward), as the
    // single-rank attention does, within the same cap.
    std::vector<BlockAttentionBatch> local;
    for (size_t i = 0; i < plan_.branches.size(); ++i)
      if (!plan_.branches[i].spanning) local.push_back(batch(i, max_B, plan_.branches[i].segment.mask(0)));
    const int64_t elements = block_attention_ds_scratch_elements(local, kDefaultDsScratchBytes);
    if (elements > 0) ds_scratch_ = DeviceArray<bf16>(elements, nullptr);
  }
  if (plan_.max_packed_per_batch > 0) {
    const int64_t message = 2 * max_B * plan_.max_packed_per_batch;
    for (DeviceArray<T>& kv : kv_) kv = DeviceArray<T>(message, nullptr);
    for (DeviceArray<float>* dkv : {&dkv_[0], &dkv_[1], &dkv_in_, &dkv_home_})
      *dkv = DeviceArray<float>(message, nullptr);
  }
}

template <typename T>
void RingDilatedAttentionCuda<T>::check_call(int B, int Tc, int H, int D, cudaStream_t stream) const {
  DILATRON_CHECK(B >= 1 && B <= max_B_ && Tc == plan_.n_local && H == H_ && D == D_,
                 "ring dilated attention (CUDA) was built for B <= {}, Tc = {}, H = {}, D = {}; called with B = {}, "
                 "Tc = {}, H = {}, D = {}",
                 max_B_, plan_.n_local, H_, D_, B, Tc, H, D);
  const bool communicates = plan_.max_packed_per_batch > 0;
  DILATRON_CHECK(!communicates || sp_group_.stream() == stream,
                 "ring dilated attention runs on one stream but communicator '{}' orders its transfers after "
                 "another; call set_stream on it with the attention's stream first",
                 sp_group_.name());
}

template <typename T>
BlockAttentionBatch RingDilatedAttentionCuda<T>::batch(size_t branch, int B, BlockMask mask) const {
  const RingBranchPlan& p = plan_.branches[branch];
  return BlockAttentionBatch{tasks_[branch].data(), B * p.tasks_per_batch, p.rows, p.rows, D_, scale_, mask};
}

// Starts one transfer of `count` elements (send and/or receive; none: an empty request). Every
// transfer is issued before its step computes; RingSchedule::serial waits for it here, so the
// step's kernels queue behind it (with NCCL only the compute stream waits, never the host).
template <typename T>
template <typename E>
CommRequest RingDilatedAttentionCuda<T>::transfer(const RingTransfer& x, const E* send, E* recv, int64_t count,
                                                  int tag, int64_t* bytes) {
  if (!x.any() || !communicates()) return CommRequest();
  const DType dtype = dtype_of<E>();  // core/tensor.h
  if (x.dst >= 0) *bytes += count * static_cast<int64_t>(sizeof(E));
  CommRequest issued;
  if (x.dst >= 0 && x.src >= 0)
    issued = sp_group_.send_recv_async(send, count, x.dst, recv, count, x.src, dtype, tag);
  else if (x.dst >= 0)
    issued = sp_group_.send_async(send, count, dtype, x.dst, tag);
  else
    issued = sp_group_.recv_async(recv, count, dtype, x.src, tag);
  if (schedule_ == RingSchedule::serial) issued.wait();
  return issued;
}

template <typename T>
void RingDilatedAttentionCuda<T>::local_forward(size_t i, float* out, float* lse, const T* q, const T* k, const T* v,
                                                int B, cudaStream_t stream) {
  const RingBranchPlan& p = plan_.branches[i];
  const BlockMask mask = p.segment.mask(0);
  stats_.branches[i].forward_score_pairs += B * p.tasks_per_batch * score_pairs(p.rows, mask);
  if (computes())
    DILATRON_CUDA_CHECK(launch_block_attention_forward(out, lse, q, k, v, batch(i, B, mask), 1.0f, true, stream));
}

// Step s: the transfer bringing the block of step s + 1 is in flight while the held block is
// attended; the buffers swap once both are done.
template <typename T>
void RingDilatedAttentionCuda<T>::spanning_forward(size_t i, float* out, float* lse, const T* q, const T* k,
                                                   const T* v, int B, cudaStream_t stream) {
  const RingBranchPlan& p = plan_.branches[i];
  RingBranchStats& st = stats_.branches[i];
  const int64_t half = B * p.packed_per_batch, message = 2 * half;
  const int64_t num_tasks = B * p.tasks_per_batch;
  T* cur = kv_[0].data();
  T* nxt = kv_[1].data();
  if (computes())
    DILATRON_CUDA_CHECK(launch_pack_rows(cur, cur + half, k, v, tasks_[i].data(), num_tasks, p.rows, D_, stream));
  for (const RingForwardStep& step : p.forward_steps) {
    CommRequest kv = transfer<T>(step.kv, cur, nxt, message, message_tag(i, kv_forward), &st.forward_bytes_sent);
    if (step.attend) {
      st.forward_score_pairs += num_tasks * score_pairs(p.rows, step.mask);
      if (computes())
        DILATRON_CUDA_CHECK(
            launch_block_attention_forward(out, lse, q, cur, cur + half, batch(i, B, step.mask), 1.0f, true, stream));
    }
    kv.wait();
    if (step.kv.src >= 0) std::swap(cur, nxt);
  }
}

template <typename T>
void RingDilatedAttentionCuda<T>::forward(T* out, float* lse, const T* q, const T* k, const T* v, int B, int Tc,
                                          int H, int D, cudaStream_t stream) {
  check_call(B, Tc, H, D, stream);
  float* out_acc = accumulator(out, out_dq_acc_);
  // Every launch merges: rows start empty (out 0, lse -inf), as the CPU ring does.
  if (computes()) {
    DILATRON_CUDA_CHECK(cudaMemsetAsync(out_acc, 0, elements(B) * sizeof(float), stream));
    DILATRON_CUDA_CHECK(launch_fill(lse, -INFINITY, static_cast<int64_t>(B) * H_ * plan_.n_local, stream));
  }
  for (size_t i = 0; i < plan_.branches.size(); ++i) {
    stats_.branches[i].forward_bytes_sent = stats_.branches[i].forward_score_pairs = 0;
    if (plan_.branches[i].spanning)
      spanning_forward(i, out_acc, lse, q, k, v, B, stream);
    else
      local_forward(i, out_acc, lse, q, k, v, B, stream);
  }
  const bool rescale = plan_.out_scale != 1.0 || !std::is_same_v<T, float>;
  if (computes() && rescale)
    DILATRON_CUDA_CHECK(
        launch_scale_from_float(out, out_acc, static_cast<float>(plan_.out_scale), elements(B), stream));
}

template <typename T>
void RingDilatedAttentionCuda<T>::local_backward(size_t i, const BackwardArgs& a) {
  const RingBranchPlan& p = plan_.branches[i];
  const BlockMask mask = p.segment.mask(0);
  stats_.branches[i].backward_score_pairs += a.B * p.tasks_per_batch * score_pairs(p.rows, mask);
  if (!computes()) return;
  const BlockAttentionBatch tasks = batch(i, a.B, mask);
  const float dout_scale = static_cast<float>(plan_.out_scale);
  DILATRON_CUDA_CHECK(launch_block_attention_backward(a.dq, a.dk, a.dv, a.dout, delta_.data(), a.lse, a.q, a.k, a.v,
                                                      tasks, dout_scale, true, ds_scratch_.data(), ds_scratch_.size(),
                                                      a.stream));
}

// The steps of RingBackwardStep: every transfer of step s is issued before step s computes; the
// partial computed at step s (dkv_[s % 2]) leaves at step s + 1, while dkv_[(s + 1) % 2] is
// being computed.
template <typename T>
void RingDilatedAttentionCuda<T>::spanning_backward(size_t i, const BackwardArgs& a) {
  const RingBranchPlan& p = plan_.branches[i];
  RingBranchStats& st = stats_.branches[i];
  const int64_t half = a.B * p.packed_per_batch, message = 2 * half;
  const int64_t num_tasks = a.B * p.tasks_per_batch;
  const DeviceBlockTask* tasks = tasks_[i].data();
  const float dout_scale = static_cast<float>(plan_.out_scale);
  T* cur = kv_[0].data();
  T* nxt = kv_[1].data();
  if (computes())
    DILATRON_CUDA_CHECK(launch_pack_rows(cur, cur + half, a.k, a.v, tasks, num_tasks, p.rows, D_, a.stream));
  int64_t* bytes = &st.backward_bytes_sent;
  for (size_t s = 0; s < p.backward_steps.size(); ++s) {
    const RingBackwardStep& step = p.backward_steps[s];
    float* partial = dkv_[s % 2].data();      // the held block's partial, computed now
    float* finished = dkv_[(s + 1) % 2].data();  // the partial of the block held at step s - 1
    CommRequest kv = transfer<T>(step.kv, cur, nxt, message, message_tag(i, kv_backward), bytes);
    CommRequest arriving =
        transfer<float>(step.dkv, finished, dkv_in_.data(), message, message_tag(i, dkv_next), bytes);
    CommRequest home =
        transfer<float>(step.home, finished, dkv_home_.data(), message, message_tag(i, dkv_home), bytes);
    if (step.attend) {
      st.backward_score_pairs += num_tasks * score_pairs(p.rows, step.mask);
      if (computes()) {
        const BlockAttentionBatch held = batch(i, a.B, step.mask);
        DILATRON_CUDA_CHECK(launch_block_attention_backward_dq(a.dq, a.dout, delta_.data(), a.lse, a.q, cur,
                                                               cur + half, held, dout_scale, true, a.stream));
        DILATRON_CUDA_CHECK(launch_block_attention_backward_dkdv(partial, partial + half, a.dout, delta_.data(), a.lse,
                                                                 a.q, cur, cur + half, held, dout_scale, false,
                                                                 a.stream));
      }
    }
    arriving.wait();
    if (computes() && step.dkv.src >= 0) DILATRON_CUDA_CHECK(launch_add(partial, dkv_in_.data(), message, a.stream));
    if (computes() && step.keep_own)
      DILATRON_CUDA_CHECK(
          launch_unpack_add_rows(a.dk, a.dv, partial, partial + half, tasks, num_tasks, p.rows, D_, a.stream));
    home.wait();
    if (computes() && step.home.src >= 0)
      DILATRON_CUDA_CHECK(launch_unpack_add_rows(a.dk, a.dv, dkv_home_.data(), dkv_home_.data() + half, tasks,
                                                 num_tasks, p.rows, D_, a.stream));
    kv.wait();
    if (step.kv.src >= 0) std::swap(cur, nxt);
  }
}

template <typename T>
void RingDilatedAttentionCuda<T>::backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse,
                                           const T* q, const T* k, const T* v, int B, int Tc, int H, int D,
                                           cudaStream_t stream) {
  check_call(B, Tc, H, D, stream);
  const BackwardArgs args{accumulator(dq, out_dq_acc_), accumulator(dk, dk_acc_), accumulator(dv, dv_acc_), dout, lse,
                          q, k, v, B, stream};
  if (computes()) {
    // delta of the final output; in head_groups the branch output is G * out and its gradient
    // dout / G, so the same product.
    DILATRON_CUDA_CHECK(launch_attention_row_delta(delta_.data(), dout, out, B, plan_.n_local, H_, D_, stream));
    for (float* grad : {args.dq, args.dk, args.dv})
      DILATRON_CUDA_CHECK(cudaMemsetAsync(grad, 0, elements(B) * sizeof(float), stream));
  }
  for (size_t i = 0; i < plan_.branches.size(); ++i) {
    stats_.branches[i].backward_bytes_sent = stats_.branches[i].backward_score_pairs = 0;
    if (plan_.branches[i].spanning)
      spanning_backward(i, args);
    else
      local_backward(i, args);
  }
  if constexpr (!std::is_same_v<T, float>) {
    if (computes()) {
      for (auto [grad, acc] : {std::pair{dq, args.dq}, std::pair{dk, args.dk}, std::pair{dv, args.dv}})
        DILATRON_CUDA_CHECK(launch_scale_from_float(grad, acc, 1.0f, elements(B), stream));
    }
  }
}

template class RingDilatedAttentionCuda<float>;
template class RingDilatedAttentionCuda<bf16>;

template <typename T>
std::unique_ptr<DeviceSequenceAttention<T>> make_ring_dilated_attention_cuda(const DilatedSpec& spec, int max_B,
                                                                              int64_t n, int H, int D,
                                                                              Communicator& sp_group,
                                                                              RingSchedule schedule) {
  return std::make_unique<RingDilatedAttentionCuda<T>>(spec, max_B, n, H, D, sp_group, schedule);
}

template std::unique_ptr<DeviceSequenceAttention<float>> make_ring_dilated_attention_cuda<float>(
    const DilatedSpec&, int, int64_t, int, int, Communicator&, RingSchedule);
template std::unique_ptr<DeviceSequenceAttention<bf16>> make_ring_dilated_attention_cuda<bf16>(
    const DilatedSpec&, int, int64_t, int, int, Communicator&, RingSchedule);
#endif

}  // namespace dilatron
