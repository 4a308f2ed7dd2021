#include "attention/ring_dilated_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "attention/block_attention.h"
#include "core/check.h"

namespace dilatron {
namespace {

template <typename T>
DType dtype_of() {
  return std::is_same_v<T, double> ? DType::f64 : DType::f32;
}

int64_t score_pairs(int64_t rows, BlockMask mask) {
  return mask == BlockMask::causal ? rows * (rows + 1) / 2 : rows * rows;
}

// The ranks sharing one segment of a spanning branch, seen from this rank at position t.
// Step s of the ring: this rank holds the block (keys and values) of position origin(s).
// Non-causal: a ring, every rank holds every block once. Causal: a line, the block of position u
// visits u, u+1, ..., g-1 only, since earlier positions never attend to it.
struct SegmentRing {
  int g, t, base;
  bool causal;

  int peer(int pos) const { return base + ((pos % g) + g) % g; }
  int next() const { return peer(t + 1); }
  int prev() const { return peer(t - 1); }
  int origin(int s) const { return t - s >= 0 ? t - s : (causal ? -1 : t - s + g); }
  bool holds(int s) const { return s < g && origin(s) >= 0; }
  // The block held at step s moves on to next() for step s + 1.
  bool forwards(int s) const { return holds(s) && (causal ? t + 1 < g : s + 1 < g); }
  // The last rank to see the block of position u, which sends its dk/dv home.
  int last_visitor(int u) const { return causal ? g - 1 : (u - 1 + g) % g; }
};

SegmentRing segment_ring(const DilatedSpec& spec, int branch, int64_t n_local, const Communicator& comm) {
  const int g = static_cast<int>(spec.branches[branch].segment_length / n_local);
  const int t = comm.rank() % g;
  return {g, t, comm.rank() - t, spec.causal};
}

// Tags keep the message kinds of one branch apart; messages of one kind between two ranks
// match in the order they were sent.
enum MessageKind { kv_forward = 0, kv_backward = 1, dkv_next = 2, dkv_home = 3, kinds = 4 };
int message_tag(int branch, MessageKind kind) { return 16 + (branch * kinds + kind) % 32000; }

// The element offset of (b, pos, h) in a (B, Tc, H, D) tensor.
struct TokenLayout {
  int B, Tc, H, D;
  int64_t at(int b, int64_t pos, int h) const { return ((static_cast<int64_t>(b) * Tc + pos) * H + h) * D; }
  int64_t token_stride() const { return static_cast<int64_t>(H) * D; }
  int64_t lse_at(int b, int h, int64_t pos) const { return (static_cast<int64_t>(b) * H + h) * Tc + pos; }
};

// Starts a ring step: send `send` (send_count elements) to dst and/or receive into `recv`;
// either side may be absent (null). Counts the bytes sent into *bytes.
template <typename T>
CommRequest start_transfer(Communicator& comm, const T* send, int64_t send_count, int dst, T* recv,
                           int64_t recv_count, int src, int tag, int64_t* bytes) {
  if (send) *bytes += send_count * static_cast<int64_t>(sizeof(T));
  if (send && recv) return comm.send_recv_async(send, send_count, dst, recv, recv_count, src, dtype_of<T>(), tag);
  if (send) return comm.send_async(send, send_count, dtype_of<T>(), dst, tag);
  if (recv) return comm.recv_async(recv, recv_count, dtype_of<T>(), src, tag);
  return CommRequest();
}

// A transfer a ring step has just issued, before its compute: RingSchedule::serial waits for it
// here, so that the step computes only once it is done.
CommRequest before_compute(RingSchedule schedule, CommRequest issued) {
  if (schedule == RingSchedule::serial) issued.wait();
  return issued;
}

// The packed block of a spanning branch: keys then values, each (B, Hb, m, D) with m = Tc / r,
// row j of head h being token o_h + j*r of this rank's chunk.
template <typename T>
struct PackedBlock {
  const TokenLayout& L;
  HeadRange heads;
  int64_t m;

  int64_t tensor_elems() const { return static_cast<int64_t>(L.B) * heads.count() * m * L.D; }
  int64_t head_at(int b, int h) const { return (static_cast<int64_t>(b) * heads.count() + (h - heads.begin)) * m * L.D; }
};

// buf := packed (k, v) of this rank.
template <typename T>
void pack_keys_values(T* buf, const PackedBlock<T>& P, const DilatedSpec& spec, int branch, const T* k,
                      const T* v) {
  const int64_t r = spec.branches[branch].dilation;
  for (int b = 0; b < P.L.B; ++b)
    for (int h = P.heads.begin; h < P.heads.end; ++h) {
      const int64_t o = head_offset(spec, branch, h);
      T* kd = buf + P.head_at(b, h);
      T* vd = kd + P.tensor_elems();
      for (int64_t j = 0; j < P.m; ++j) {
        const int64_t src = P.L.at(b, o + j * r, h);
        std::copy_n(k + src, P.L.D, kd + j * P.L.D);
        std::copy_n(v + src, P.L.D, vd + j * P.L.D);
      }
    }
}

// dk, dv (strided tokens of this rank) += packed (dk, dv).
template <typename T>
void unpack_add(T* dk, T* dv, const T* buf, const PackedBlock<T>& P, const DilatedSpec& spec, int branch) {
  const int64_t r = spec.branches[branch].dilation;
  for (int b = 0; b < P.L.B; ++b)
    for (int h = P.heads.begin; h < P.heads.end; ++h) {
      const int64_t o = head_offset(spec, branch, h);
      const T* ks = buf + P.head_at(b, h);
      const T* vs = ks + P.tensor_elems();
      for (int64_t j = 0; j < P.m; ++j) {
        const int64_t dst = P.L.at(b, o + j * r, h);
        for (int d = 0; d < P.L.D; ++d) {
          dk[dst + d] += ks[j * P.L.D + d];
          dv[dst + d] += vs[j * P.L.D + d];
        }
      }
    }
}

// The tensors of one call, for the per-block helpers below.
template <typename T>
struct ForwardArgs {
  T* out;
  attention_lse_t<T>* lse;
  const T *q, *k, *v;
  TokenLayout L;
  double scale;
};

template <typename T>
struct BackwardArgs {
  T *dq, *dk, *dv;
  const T* dout;  // already scaled by 1/G in head_groups mode
  const attention_lse_t<T>* delta;  // (B, H, Tc), rowsum(dout * out) of the final output
  const attention_lse_t<T>* lse;
  const T *q, *k, *v;
  TokenLayout L;
  double scale;
};

// (out, lse) rows of queries q_pos0 + j*r, j < rows, of head h merge in the attention over
// `rows` keys given as k, v row blocks. tmp_out (rows, D) and tmp_lse (rows) are scratch.
template <typename T>
void attend_and_merge(const ForwardArgs<T>& a, int b, int h, int64_t q_pos0, int64_t r, int64_t rows,
                      RowBlock<const T> k, RowBlock<const T> v, BlockMask mask, T* tmp_out,
                      attention_lse_t<T>* tmp_lse) {
  const int64_t row_stride = r * a.L.token_stride();
  const RowBlock<const T> q{a.q + a.L.at(b, q_pos0, h), row_stride};
  block_attention_forward(RowBlock<T>{tmp_out, a.L.D}, tmp_lse, 1, q, k, v, rows, rows, a.L.D, a.scale, mask);
  merge_attention_partial(RowBlock<T>{a.out + a.L.at(b, q_pos0, h), row_stride}, a.lse + a.L.lse_at(b, h, q_pos0), r,
                          RowBlock<const T>{tmp_out, a.L.D}, tmp_lse, 1, rows, a.L.D);
}

template <typename T>
void backward_block(const BackwardArgs<T>& a, int b, int h, int64_t q_pos0, int64_t r, int64_t rows, RowBlock<T> dk,
                    RowBlock<T> dv, RowBlock<const T> k, RowBlock<const T> v, BlockMask mask,
                    attention_lse_t<T>* delta_rows) {
  const int64_t row_stride = r * a.L.token_stride();
  const int64_t q_at = a.L.at(b, q_pos0, h), lse_at = a.L.lse_at(b, h, q_pos0);
  // The block primitive reads delta contiguous (one per query row) and lse with a stride.
  for (int64_t j = 0; j < rows; ++j) delta_rows[j] = a.delta[lse_at + j * r];
  block_attention_backward(RowBlock<T>{a.dq + q_at, row_stride}, dk, dv, RowBlock<const T>{a.dout + q_at, row_stride},
                           delta_rows, a.lse + lse_at, r, RowBlock<const T>{a.q + q_at, row_stride}, k, v, rows,
                           rows, a.L.D, a.scale, mask);
}

BlockMask self_mask(bool causal) { return causal ? BlockMask::causal : BlockMask::none; }

// A branch whose segments lie inside this rank's chunk: dilated attention on the chunk alone.
template <typename T>
void local_branch_forward(const ForwardArgs<T>& a, const DilatedSpec& spec, int branch, RingBranchStats* stats) {
  const auto [w, r] = spec.branches[branch];
  const int64_t rows = w / r;
  const HeadRange heads = branch_heads(spec, branch, a.L.H);
  const BlockMask mask = self_mask(spec.causal);
  std::vector<T> tmp_out(rows * a.L.D);
  std::vector<attention_lse_t<T>> tmp_lse(rows);
  const int64_t stride = r * a.L.token_stride();
  for (int b = 0; b < a.L.B; ++b)
    for (int h = heads.begin; h < heads.end; ++h)
      for (int64_t seg = 0; seg < a.L.Tc; seg += w) {
        const int64_t pos0 = seg + head_offset(spec, branch, h);
        const int64_t at = a.L.at(b, pos0, h);
        attend_and_merge(a, b, h, pos0, r, rows, RowBlock<const T>{a.k + at, stride},
                         RowBlock<const T>{a.v + at, stride}, mask, tmp_out.data(), tmp_lse.data());
        stats->forward_score_pairs += score_pairs(rows, mask);
      }
}

template <typename T>
void local_branch_backward(const BackwardArgs<T>& a, const DilatedSpec& spec, int branch, RingBranchStats* stats) {
  const auto [w, r] = spec.branches[branch];
  const int64_t rows = w / r;
  const HeadRange heads = branch_heads(spec, branch, a.L.H);
  const BlockMask mask = self_mask(spec.causal);
  const int64_t stride = r * a.L.token_stride();
  std::vector<attention_lse_t<T>> delta_rows(rows);
  for (int b = 0; b < a.L.B; ++b)
    for (int h = heads.begin; h < heads.end; ++h)
      for (int64_t seg = 0; seg < a.L.Tc; seg += w) {
        const int64_t pos0 = seg + head_offset(spec, branch, h);
        const int64_t at = a.L.at(b, pos0, h);
        backward_block(a, b, h, pos0, r, rows, RowBlock<T>{a.dk + at, stride}, RowBlock<T>{a.dv + at, stride},
                       RowBlock<const T>{a.k + at, stride}, RowBlock<const T>{a.v + at, stride}, mask,
                       delta_rows.data());
        stats->backward_score_pairs += score_pairs(rows, mask);
      }
}

BlockMask block_mask(const SegmentRing& ring, int origin) {
  return origin == ring.t ? self_mask(ring.causal) : BlockMask::none;
}

// Spanning branch forward: the packed (k, v) blocks of the segment's ranks pass by; the
// transfer for step s+1 runs while step s computes (two buffers), unless the schedule is serial.
template <typename T>
void spanning_branch_forward(const ForwardArgs<T>& a, const DilatedSpec& spec, int branch, Communicator& comm,
                             RingSchedule schedule, RingBranchStats* stats) {
  const int64_t r = spec.branches[branch].dilation;
  const SegmentRing ring = segment_ring(spec, branch, a.L.Tc, comm);
  const PackedBlock<T> P{a.L, branch_heads(spec, branch, a.L.H), a.L.Tc / r};
  const int64_t message = 2 * P.tensor_elems();
  std::vector<T> cur(message), nxt(message), tmp_out(P.m * a.L.D);
  std::vector<attention_lse_t<T>> tmp_lse(P.m);
  pack_keys_values(cur.data(), P, spec, branch, a.k, a.v);
  const int tag = message_tag(branch, kv_forward);
  for (int s = 0; s < ring.g; ++s) {
    CommRequest transfer =
        before_compute(schedule, start_transfer(comm, ring.forwards(s) ? cur.data() : nullptr, message, ring.next(),
                                                ring.holds(s + 1) ? nxt.data() : nullptr, message, ring.prev(), tag,
                                                &stats->forward_bytes_sent));
    if (ring.holds(s)) {
      const BlockMask mask = block_mask(ring, ring.origin(s));
      for (int b = 0; b < a.L.B; ++b)
        for (int h = P.heads.begin; h < P.heads.end; ++h) {
          const T* kb = cur.data() + P.head_at(b, h);
          attend_and_merge(a, b, h, head_offset(spec, branch, h), r, P.m, RowBlock<const T>{kb, a.L.D},
                           RowBlock<const T>{kb + P.tensor_elems(), a.L.D}, mask, tmp_out.data(), tmp_lse.data());
          stats->forward_score_pairs += score_pairs(P.m, mask);
        }
    }
    transfer.wait();
    if (ring.holds(s + 1)) std::swap(cur, nxt);
  }
}

// Spanning branch backward: (k, v) blocks travel as in the forward (transfer overlapping the
// step's compute); each step's dk/dv partial of the held block is computed into a fresh buffer,
// the partial accumulated by the block's earlier visitors is added when it arrives, and the sum
// goes to the next visitor, or home from the last one. dq stays local. Serial: every transfer is
// done before a step computes (the home receive, posted before the loop, has no step).
template <typename T>
void spanning_branch_backward(const BackwardArgs<T>& a, const DilatedSpec& spec, int branch, Communicator& comm,
                              RingSchedule schedule, RingBranchStats* stats) {
  const int64_t r = spec.branches[branch].dilation;
  const SegmentRing ring = segment_ring(spec, branch, a.L.Tc, comm);
  const PackedBlock<T> P{a.L, branch_heads(spec, branch, a.L.H), a.L.Tc / r};
  const int64_t message = 2 * P.tensor_elems();
  std::vector<T> cur(message), nxt(message), dkv_in(message), home(message);
  std::vector<T> dkv[2] = {std::vector<T>(message), std::vector<T>(message)};
  std::vector<attention_lse_t<T>> delta_rows(P.m);
  CommRequest dkv_sent[2];
  pack_keys_values(cur.data(), P, spec, branch, a.k, a.v);

  const int home_from = ring.last_visitor(ring.t);
  CommRequest home_arrival;
  if (home_from != ring.t)
    home_arrival = comm.recv_async(home.data(), message, dtype_of<T>(), ring.peer(home_from),
                                   message_tag(branch, dkv_home));
  int64_t* bytes = &stats->backward_bytes_sent;
  for (int s = 0; s < ring.g; ++s) {
    CommRequest transfer =
        before_compute(schedule, start_transfer(comm, ring.forwards(s) ? cur.data() : nullptr, message, ring.next(),
                                                ring.holds(s + 1) ? nxt.data() : nullptr, message, ring.prev(),
                                                message_tag(branch, kv_backward), bytes));
    if (ring.holds(s)) {
      const int origin = ring.origin(s);
      CommRequest dkv_arrival;
      if (s > 0)
        dkv_arrival = before_compute(schedule, comm.recv_async(dkv_in.data(), message, dtype_of<T>(), ring.prev(),
                                                               message_tag(branch, dkv_next)));
      std::vector<T>& acc = dkv[s % 2];
      dkv_sent[s % 2].wait();
      // Serial: the partial sent after step s - 1 computed is done too. It is waited here, not when
      // sent, because its receiver posts the receive only at step s (just above, on next()): in a
      // ring every rank would wait on a send that its neighbour cannot receive yet, a deadlock
      // once messages are too large for MPI to buffer.
      if (schedule == RingSchedule::serial) dkv_sent[(s + 1) % 2].wait();
      std::fill(acc.begin(), acc.end(), T(0));
      const BlockMask mask = block_mask(ring, origin);
      for (int b = 0; b < a.L.B; ++b)
        for (int h = P.heads.begin; h < P.heads.end; ++h) {
          const int64_t at = P.head_at(b, h), v_at = at + P.tensor_elems();
          backward_block(a, b, h, head_offset(spec, branch, h), r, P.m, RowBlock<T>{acc.data() + at, a.L.D},
                         RowBlock<T>{acc.data() + v_at, a.L.D}, RowBlock<const T>{cur.data() + at, a.L.D},
                         RowBlock<const T>{cur.data() + v_at, a.L.D}, mask, delta_rows.data());
          stats->backward_score_pairs += score_pairs(P.m, mask);
        }
      if (s > 0) {
        dkv_arrival.wait();
        for (int64_t i = 0; i < message; ++i) acc[i] += dkv_in[i];
      }
      if (ring.forwards(s)) {
        dkv_sent[s % 2] = start_transfer<T>(comm, acc.data(), message, ring.next(), nullptr, 0, -1,
                                            message_tag(branch, dkv_next), bytes);
      } else if (origin != ring.t) {
        dkv_sent[s % 2] = start_transfer<T>(comm, acc.data(), message, ring.peer(origin), nullptr, 0, -1,
                                            message_tag(branch, dkv_home), bytes);
      } else {
        unpack_add(a.dk, a.dv, acc.data(), P, spec, branch);  // nobody else sees this block
      }
    }
    transfer.wait();
    if (ring.holds(s + 1)) std::swap(cur, nxt);
  }
  if (home_from != ring.t) {
    home_arrival.wait();
    unpack_add(a.dk, a.dv, home.data(), P, spec, branch);
  }
  for (CommRequest& sent : dkv_sent) sent.wait();
}

bool is_spanning(const DilatedBranch& br, int64_t n_local) { return br.segment_length > n_local; }

}  // namespace

namespace {

int64_t sum_over_branches(const std::vector<RingBranchStats>& branches, int64_t RingBranchStats::*field) {
  int64_t total = 0;
  for (const RingBranchStats& b : branches) total += b.*field;
  return total;
}

}  // namespace

int64_t RingCommStats::forward_bytes_sent() const {
  return sum_over_branches(branches, &RingBranchStats::forward_bytes_sent);
}
int64_t RingCommStats::backward_bytes_sent() const {
  return sum_over_branches(branches, &RingBranchStats::backward_bytes_sent);
}
int64_t RingCommStats::forward_score_pairs() const {
  return sum_over_branches(branches, &RingBranchStats::forward_score_pairs);
}
int64_t RingCommStats::backward_score_pairs() const {
  return sum_over_branches(branches, &RingBranchStats::backward_score_pairs);
}

RingBranchBytes ring_branch_bytes_formula(const DilatedSpec& spec, int branch, int64_t n, int P, int rank, int B,
                                          int H, int D, int64_t element_bytes) {
  const int64_t n_local = n / P;
  const auto [w, r] = spec.branches[branch];
  if (w <= n_local) return {};
  const int64_t g = w / n_local, t = rank % g;
  // S: one packed tensor (keys, or values, or their gradients) of this rank for the branch.
  const int64_t S = static_cast<int64_t>(B) * branch_heads(spec, branch, H).count() * (n_local / r) * D * element_bytes;
  if (!spec.causal) return {2 * S * (g - 1), 2 * S * (2 * g - 1)};
  if (t == g - 1) return {0, 2 * S * (g - 1)};
  return {2 * S * (t + 1), 4 * S * (t + 1)};
}

template <typename T>
RingDilatedAttention<T>::RingDilatedAttention(DilatedSpec spec, int64_t n, Communicator& sp_group,
                                              RingSchedule schedule)
    : spec_(std::move(spec)), n_(n), n_local_(0), sp_group_(sp_group), schedule_(schedule) {
  const int P = sp_group_.size();
  DILATRON_CHECK_INPUT(n > 0 && n % P == 0,
                       "parallel.sequence_parallel: {} ranks cannot split a sequence of {} tokens into equal chunks",
                       P, n);
  n_local_ = n / P;
  // Heads are known only at forward(), which checks the head count; the rest of the spec now.
  validate_dilated_spec(spec_, n_, std::max<int>(1, static_cast<int>(spec_.branches.size())));
  for (const auto& [w, r] : spec_.branches) {
    DILATRON_CHECK_INPUT(n_local_ % w == 0 || w % n_local_ == 0,
                         "attention.segment_lengths: segment length {} and the chunk of {} tokens per rank "
                         "(n {} / parallel.sequence_parallel {}) must divide one another",
                         w, n_local_, n_, P);
    DILATRON_CHECK_INPUT(w <= n_local_ || n_local_ % r == 0,
                         "attention.dilation_rates: dilation rate {} of the segment of {} tokens, which spans "
                         "several ranks, must divide the chunk of {} tokens per rank",
                         r, w, n_local_);
  }
  stats_.branches.resize(spec_.branches.size());
  for (size_t i = 0; i < spec_.branches.size(); ++i) {
    stats_.branches[i].spanning = is_spanning(spec_.branches[i], n_local_);
    stats_.branches[i].ranks_per_segment = stats_.branches[i].spanning ? spec_.branches[i].segment_length / n_local_ : 1;
  }
}

template <typename T>
void RingDilatedAttention<T>::check_shapes(int Tc, int H) const {
  DILATRON_CHECK(Tc == n_local_, "ring dilated attention built for {} tokens per rank, called with {}", n_local_, Tc);
  validate_dilated_spec(spec_, n_, H);
}

template <typename T>
void RingDilatedAttention<T>::forward(T* out, attention_lse_t<T>* lse, const T* q, const T* k, const T* v, int B,
                                      int Tc, int H, int D) {
  check_shapes(Tc, H);
  const TokenLayout L{B, Tc, H, D};
  std::fill_n(out, static_cast<int64_t>(B) * Tc * H * D, T(0));
  std::fill_n(lse, static_cast<int64_t>(B) * H * Tc, -std::numeric_limits<attention_lse_t<T>>::infinity());
  const ForwardArgs<T> args{out, lse, q, k, v, L, 1.0 / std::sqrt(static_cast<double>(D))};
  for (size_t i = 0; i < spec_.branches.size(); ++i) {
    RingBranchStats& st = stats_.branches[i];
    st.forward_bytes_sent = st.forward_score_pairs = 0;
    if (st.spanning)
      spanning_branch_forward(args, spec_, static_cast<int>(i), sp_group_, schedule_, &st);
    else
      local_branch_forward(args, spec_, static_cast<int>(i), &st);
  }
  if (spec_.mode == DilatedMode::head_groups) {
    const T inv_groups = T(1) / static_cast<T>(spec_.branches.size());
    for (int64_t i = 0; i < static_cast<int64_t>(B) * Tc * H * D; ++i) out[i] *= inv_groups;
  }
}

template <typename T>
void RingDilatedAttention<T>::backward(T* dq, T* dk, T* dv, const T* dout, const T* out,
                                       const attention_lse_t<T>* lse, const T* q, const T* k, const T* v, int B,
                                       int Tc, int H, int D) {
  check_shapes(Tc, H);
  const TokenLayout L{B, Tc, H, D};
  const int64_t numel = static_cast<int64_t>(B) * Tc * H * D;
  // delta (B, H, Tc): rowsum(dout * out) of the final output. In head_groups mode the branch
  // output is G * out and its gradient dout / G, so delta is the same product.
  std::vector<attention_lse_t<T>> delta(static_cast<size_t>(B) * H * Tc);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      attention_row_delta(delta.data() + L.lse_at(b, h, 0), RowBlock<const T>{dout + L.at(b, 0, h), L.token_stride()},
                          RowBlock<const T>{out + L.at(b, 0, h), L.token_stride()}, Tc, D);
  std::vector<T> scaled_dout;
  const T* branch_dout = dout;
  if (spec_.mode == DilatedMode::head_groups) {
    const T inv_groups = T(1) / static_cast<T>(spec_.branches.size());
    scaled_dout.resize(numel);
    for (int64_t i = 0; i < numel; ++i) scaled_dout[i] = dout[i] * inv_groups;
    branch_dout = scaled_dout.data();
  }
  const BackwardArgs<T> args{dq, dk, dv, branch_dout, delta.data(), lse, q, k, v, L,
                             1.0 / std::sqrt(static_cast<double>(D))};
  for (size_t i = 0; i < spec_.branches.size(); ++i) {
    RingBranchStats& st = stats_.branches[i];
    st.backward_bytes_sent = st.backward_score_pairs = 0;
    if (st.spanning)
      spanning_branch_backward(args, spec_, static_cast<int>(i), sp_group_, schedule_, &st);
    else
      local_branch_backward(args, spec_, static_cast<int>(i), &st);
  }
}

template class RingDilatedAttention<float>;
template class RingDilatedAttention<double>;

}  // namespace dilatron
