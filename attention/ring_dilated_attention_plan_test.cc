// The GPU ring's plan (attention/ring_dilated_attention_cuda.h) checked on the CPU: P ranks are
// simulated in one process and run the plan exactly as RingDilatedAttentionCuda does (pack with
// the tasks, then per ring step issue the transfers, compute, deliver, add, unpack; same buffers,
// same swaps), with the CPU block primitive in fp64. Their chunks must reproduce
// dilated_attention_forward/backward over the whole sequence.
//
// Messages go through a mailbox per step and transfer kind (kv, dkv, home): every send must be
// received in the same step and kind (all ranks issue the kinds in one order, so this is the
// in-order matching NCCL needs), at most one message per ordered pair; a sent buffer must be
// unchanged when the message is delivered (nothing overwrote it while in flight), and a receive
// buffer is NaN until delivery (nothing read it early). Outputs start as NaN. Bytes sent per
// rank and branch must equal ring_branch_bytes_formula.
#include "attention/ring_dilated_attention_cuda.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "attention/block_attention.h"
#include "attention/dilated_attention.h"
#include "attention/grad_check.h"
#include "attention/ring_dilated_attention.h"
#include "core/check.h"

using namespace dilatron;
using namespace dilatron::testing;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
using Tensor = std::vector<double>;

struct Shape {
  int B;
  int64_t n;
  int H, D;
};

double score_scale(int D) { return 1.0 / std::sqrt(static_cast<double>(D)); }

// One rank: its chunk of every tensor, its plan and its ring buffers (as the GPU class holds them).
struct Rank {
  RingPlan plan;
  Tensor q, k, v, dout;
  Tensor out, lse, dq, dk, dv, delta;
  Tensor kv[2], dkv[2], dkv_in, dkv_home;
  int cur = 0;  // kv[cur] is the held block
  int64_t forward_bytes = 0, backward_bytes = 0;
};

// Messages of one (step, kind) in flight: (src, dst) -> payload, with the buffer it was sent from.
class Mailbox {
 public:
  void post(int src, int dst, const Tensor& buffer) {
    INFO("second message from ", src, " to ", dst, " in one step and kind");
    REQUIRE(box_.count({src, dst}) == 0);
    box_[{src, dst}] = {buffer, &buffer};
  }
  // Receives into `buffer`, which must have the sent size; the sent buffer must be unchanged.
  void deliver(int src, int dst, Tensor& buffer) {
    INFO("message from ", src, " to ", dst);
    const auto it = box_.find({src, dst});
    REQUIRE(it != box_.end());
    REQUIRE(it->second.payload.size() == buffer.size());
    REQUIRE(same_bits(*it->second.source, it->second.payload));
    buffer = it->second.payload;
    box_.erase(it);
  }
  bool empty() const { return box_.empty(); }

 private:
  static bool same_bits(const Tensor& a, const Tensor& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
    return true;
  }
  struct Sent {
    Tensor payload;
    const Tensor* source;
  };
  std::map<std::pair<int, int>, Sent> box_;
};

// A receive buffer is NaN from the issue of the transfer until delivery.
void poison_receive(const RingTransfer& x, Tensor& buffer) {
  if (x.src >= 0) std::fill(buffer.begin(), buffer.end(), kNaN);
}

// Issues one transfer kind of one step on every rank: posts the sends (counting bytes), poisons the
// receive buffers; deliver_all completes it.
template <typename Send, typename Receive>
void post_all(std::vector<Rank>& ranks, Mailbox& box, const std::vector<RingTransfer>& x, Send send_buffer,
              Receive receive_buffer, int64_t Rank::*bytes, int64_t bytes_per_message) {
  for (size_t c = 0; c < ranks.size(); ++c) {
    if (x[c].dst >= 0) {
      box.post(static_cast<int>(c), x[c].dst, send_buffer(ranks[c]));
      ranks[c].*bytes += bytes_per_message;
    }
    poison_receive(x[c], receive_buffer(ranks[c]));
  }
}
template <typename Receive>
void deliver_all(std::vector<Rank>& ranks, Mailbox& box, const std::vector<RingTransfer>& x, Receive receive_buffer) {
  for (size_t c = 0; c < ranks.size(); ++c)
    if (x[c].src >= 0) box.deliver(x[c].src, static_cast<int>(c), receive_buffer(ranks[c]));
  REQUIRE(box.empty());
}

// (out, lse) := merge with attention of the task's query rows over keys/values at (kb, vb).
void attend(Rank& r, const RingBranchPlan& p, int B, int D, const double* kb, const double* vb, BlockMask mask) {
  Tensor partial(static_cast<size_t>(p.rows) * D), partial_lse(p.rows);
  for (int64_t t = 0; t < B * p.tasks_per_batch; ++t) {
    const DeviceBlockTask& task = p.tasks[t];
    block_attention_forward<double>({partial.data(), D}, partial_lse.data(), 1,
                                    {r.q.data() + task.q_offset, task.q_stride}, {kb + task.k_offset, task.k_stride},
                                    {vb + task.k_offset, task.k_stride}, task.nq, task.nk, D, score_scale(D), mask);
    merge_attention_partial<double>({r.out.data() + task.q_offset, task.q_stride}, r.lse.data() + task.lse_offset,
                                    task.lse_stride, {partial.data(), D}, partial_lse.data(), 1, task.nq, D);
  }
}

// dq (chunk) += and dk, dv (at dkb, dvb) += this block's share; dout reaches the branch scaled.
void attend_backward(Rank& r, const RingBranchPlan& p, int B, int D, double dout_scale, const double* kb,
                     const double* vb, double* dkb, double* dvb, BlockMask mask) {
  Tensor task_delta(p.rows), branch_dout(static_cast<size_t>(p.rows) * D);
  for (int64_t t = 0; t < B * p.tasks_per_batch; ++t) {
    const DeviceBlockTask& task = p.tasks[t];
    for (int64_t i = 0; i < task.nq; ++i) {
      task_delta[i] = r.delta[task.lse_offset + i * task.lse_stride];
      for (int d = 0; d < D; ++d) branch_dout[i * D + d] = r.dout[task.q_offset + i * task.q_stride + d] * dout_scale;
    }
    block_attention_backward<double>({r.dq.data() + task.q_offset, task.q_stride}, {dkb + task.k_offset, task.k_stride},
                                     {dvb + task.k_offset, task.k_stride}, {branch_dout.data(), D}, task_delta.data(),
                                     r.lse.data() + task.lse_offset, task.lse_stride,
                                     {r.q.data() + task.q_offset, task.q_stride}, {kb + task.k_offset, task.k_stride},
                                     {vb + task.k_offset, task.k_stride}, task.nq, task.nk, D, score_scale(D), mask);
  }
}

// The ring_pack.cu kernels: packed rows k_* <-> chunk rows q_*.
void pack(const RingBranchPlan& p, int B, int D, Tensor& packed, const Tensor& k, const Tensor& v) {
  const int64_t half = B * p.packed_per_batch;
  for (int64_t t = 0; t < B * p.tasks_per_batch; ++t)
    for (int64_t j = 0; j < p.rows; ++j)
      for (int d = 0; d < D; ++d) {
        const DeviceBlockTask& task = p.tasks[t];
        packed[task.k_offset + j * task.k_stride + d] = k[task.q_offset + j * task.q_stride + d];
        packed[half + task.k_offset + j * task.k_stride + d] = v[task.q_offset + j * task.q_stride + d];
      }
}
void unpack_add(const RingBranchPlan& p, int B, int D, Tensor& dk, Tensor& dv, const Tensor& packed) {
  const int64_t half = B * p.packed_per_batch;
  for (int64_t t = 0; t < B * p.tasks_per_batch; ++t)
    for (int64_t j = 0; j < p.rows; ++j)
      for (int d = 0; d < D; ++d) {
        const DeviceBlockTask& task = p.tasks[t];
        dk[task.q_offset + j * task.q_stride + d] += packed[task.k_offset + j * task.k_stride + d];
        dv[task.q_offset + j * task.q_stride + d] += packed[half + task.k_offset + j * task.k_stride + d];
      }
}

template <typename Step, typename Field>
std::vector<RingTransfer> transfers(const std::vector<Rank>& ranks, size_t branch, size_t s,
                                    const std::vector<Step> RingBranchPlan::*steps, Field field) {
  std::vector<RingTransfer> x;
  for (const Rank& r : ranks) {
    const std::vector<Step>& all = r.plan.branches[branch].*steps;
    REQUIRE(all.size() > s);
    x.push_back(all[s].*field);
  }
  return x;
}

void run_forward(std::vector<Rank>& ranks, int B, int D) {
  for (Rank& r : ranks) {
    std::fill(r.out.begin(), r.out.end(), 0.0);
    std::fill(r.lse.begin(), r.lse.end(), -kInf);
  }
  const RingPlan& plan0 = ranks[0].plan;
  for (size_t i = 0; i < plan0.branches.size(); ++i) {
    const bool spanning = plan0.branches[i].spanning;
    for (Rank& r : ranks) {
      const RingBranchPlan& p = r.plan.branches[i];
      REQUIRE(p.spanning == spanning);
      if (!spanning) {
        attend(r, p, B, D, r.k.data(), r.v.data(), p.segment.mask(0));
        continue;
      }
      const int64_t message = 2 * B * p.packed_per_batch;
      for (Tensor& buffer : r.kv) buffer.assign(message, kNaN);
      r.cur = 0;
      pack(p, B, D, r.kv[0], r.k, r.v);
    }
    if (!spanning) continue;
    const int64_t message_bytes = 2 * B * plan0.branches[i].packed_per_batch * static_cast<int64_t>(sizeof(double));
    for (size_t s = 0; s < plan0.branches[i].forward_steps.size(); ++s) {
      const auto kv = transfers(ranks, i, s, &RingBranchPlan::forward_steps, &RingForwardStep::kv);
      Mailbox box;
      post_all(
          ranks, box, kv, [](Rank& r) -> Tensor& { return r.kv[r.cur]; },
          [](Rank& r) -> Tensor& { return r.kv[1 - r.cur]; }, &Rank::forward_bytes, message_bytes);
      for (Rank& r : ranks) {
        const RingBranchPlan& p = r.plan.branches[i];
        const RingForwardStep& step = p.forward_steps[s];
        const int64_t half = B * p.packed_per_batch;
        if (step.attend) attend(r, p, B, D, r.kv[r.cur].data(), r.kv[r.cur].data() + half, step.mask);
      }
      deliver_all(ranks, box, kv, [](Rank& r) -> Tensor& { return r.kv[1 - r.cur]; });
      for (size_t c = 0; c < ranks.size(); ++c)
        if (kv[c].src >= 0) ranks[c].cur = 1 - ranks[c].cur;
    }
  }
  for (Rank& r : ranks)
    for (double& x : r.out) x *= r.plan.out_scale;
}

void run_backward(std::vector<Rank>& ranks, int B, int H, int D) {
  for (Rank& r : ranks) {
    const int64_t Tc = r.plan.n_local;
    for (int b = 0; b < B; ++b)
      for (int64_t p = 0; p < Tc; ++p)
        for (int h = 0; h < H; ++h) {
          const int64_t at = ((b * Tc + p) * H + h) * D;
          attention_row_delta<double>(&r.delta[(static_cast<int64_t>(b) * H + h) * Tc + p], {r.dout.data() + at, D},
                                      {r.out.data() + at, D}, 1, D);
        }
    for (Tensor* grad : {&r.dq, &r.dk, &r.dv}) std::fill(grad->begin(), grad->end(), 0.0);
  }
  const RingPlan& plan0 = ranks[0].plan;
  for (size_t i = 0; i < plan0.branches.size(); ++i) {
    const bool spanning = plan0.branches[i].spanning;
    for (Rank& r : ranks) {
      const RingBranchPlan& p = r.plan.branches[i];
      if (!spanning) {
        attend_backward(r, p, B, D, r.plan.out_scale, r.k.data(), r.v.data(), r.dk.data(), r.dv.data(),
                        p.segment.mask(0));
        continue;
      }
      const int64_t message = 2 * B * p.packed_per_batch;
      for (Tensor* buffer : {&r.kv[0], &r.kv[1], &r.dkv[0], &r.dkv[1], &r.dkv_in, &r.dkv_home})
        buffer->assign(message, kNaN);
      r.cur = 0;
      pack(p, B, D, r.kv[0], r.k, r.v);
    }
    if (!spanning) continue;
    const int64_t message = 2 * B * plan0.branches[i].packed_per_batch;
    const int64_t bytes = message * static_cast<int64_t>(sizeof(double));
    for (size_t s = 0; s < plan0.branches[i].backward_steps.size(); ++s) {
      const auto steps = &RingBranchPlan::backward_steps;
      const auto kv = transfers(ranks, i, s, steps, &RingBackwardStep::kv);
      const auto dkv = transfers(ranks, i, s, steps, &RingBackwardStep::dkv);
      const auto home = transfers(ranks, i, s, steps, &RingBackwardStep::home);
      auto partial = [s](Rank& r) -> Tensor& { return r.dkv[s % 2]; };
      auto finished = [s](Rank& r) -> Tensor& { return r.dkv[(s + 1) % 2]; };
      Mailbox kv_box, dkv_box, home_box;
      post_all(
          ranks, kv_box, kv, [](Rank& r) -> Tensor& { return r.kv[r.cur]; },
          [](Rank& r) -> Tensor& { return r.kv[1 - r.cur]; }, &Rank::backward_bytes, bytes);
      post_all(ranks, dkv_box, dkv, finished, [](Rank& r) -> Tensor& { return r.dkv_in; }, &Rank::backward_bytes,
               bytes);
      post_all(ranks, home_box, home, finished, [](Rank& r) -> Tensor& { return r.dkv_home; }, &Rank::backward_bytes,
               bytes);
      for (Rank& r : ranks) {
        const RingBranchPlan& p = r.plan.branches[i];
        const RingBackwardStep& step = p.backward_steps[s];
        const int64_t half = B * p.packed_per_batch;
        if (!step.attend) continue;
        Tensor& acc = partial(r);
        std::fill(acc.begin(), acc.end(), 0.0);  // the GPU's dK/dV launch writes (accumulate = false)
        attend_backward(r, p, B, D, r.plan.out_scale, r.kv[r.cur].data(), r.kv[r.cur].data() + half, acc.data(),
                        acc.data() + half, step.mask);
      }
      deliver_all(ranks, dkv_box, dkv, [](Rank& r) -> Tensor& { return r.dkv_in; });
      for (Rank& r : ranks) {
        const RingBranchPlan& p = r.plan.branches[i];
        const RingBackwardStep& step = p.backward_steps[s];
        if (step.dkv.src >= 0)
          for (int64_t e = 0; e < message; ++e) partial(r)[e] += r.dkv_in[e];
        if (step.keep_own) unpack_add(p, B, D, r.dk, r.dv, partial(r));
      }
      deliver_all(ranks, home_box, home, [](Rank& r) -> Tensor& { return r.dkv_home; });
      for (Rank& r : ranks) {
        const RingBranchPlan& p = r.plan.branches[i];
        if (p.backward_steps[s].home.src >= 0) unpack_add(p, B, D, r.dk, r.dv, r.dkv_home);
      }
      deliver_all(ranks, kv_box, kv, [](Rank& r) -> Tensor& { return r.kv[1 - r.cur]; });
      for (size_t c = 0; c < ranks.size(); ++c)
        if (kv[c].src >= 0) ranks[c].cur = 1 - ranks[c].cur;
    }
  }
}

// Element (b, pos, h, d) of a (B, T, H, D) tensor; positions [begin, begin + len) of every batch.
Tensor token_slice(const Tensor& full, const Shape& s, int64_t begin, int64_t len) {
  Tensor out;
  const int64_t token = static_cast<int64_t>(s.H) * s.D;
  for (int b = 0; b < s.B; ++b)
    out.insert(out.end(), full.begin() + (b * s.n + begin) * token, full.begin() + (b * s.n + begin + len) * token);
  return out;
}
Tensor lse_slice(const Tensor& full, const Shape& s, int64_t begin, int64_t len) {
  Tensor out;
  for (int64_t row = 0; row < static_cast<int64_t>(s.B) * s.H; ++row)
    out.insert(out.end(), full.begin() + row * s.n + begin, full.begin() + row * s.n + begin + len);
  return out;
}

// |got - want| <= 1e-12 * (1 + max |want|) (fp64, only the merge order differs); -inf exact.
void require_equal(const std::string& what, const Tensor& got, const Tensor& want, double scale) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CAPTURE(got[i]);
    CAPTURE(want[i]);
    if (std::isinf(want[i])) REQUIRE(got[i] == want[i]);
    else REQUIRE(std::abs(got[i] - want[i]) <= 1e-12 * (1 + scale));
  }
}

double max_abs_finite(const Tensor& x) {
  double m = 0;
  for (double e : x)
    if (std::isfinite(e)) m = std::max(m, std::abs(e));
  return m;
}

// P simulated ranks run the plan for B of max_B batch elements; each chunk must equal the slice of
// the single-rank result, and each rank's bytes the documented formula.
void check_ring(const DilatedSpec& spec, const Shape& s, int P, int max_B) {
  const int64_t size = s.B * s.n * s.H * s.D, lse_size = s.B * s.H * s.n;
  const Tensor q = random_normal(size, 31), k = random_normal(size, 32), v = random_normal(size, 33);
  const Tensor dout = random_normal(size, 34);
  Tensor want_out(size), want_lse(lse_size), want_dq(size, 0.0), want_dk(size, 0.0), want_dv(size, 0.0);
  dilated_attention_forward<double>(want_out.data(), want_lse.data(), q.data(), k.data(), v.data(), s.B, s.n, s.H, s.D,
                                    spec);
  dilated_attention_backward<double>(want_dq.data(), want_dk.data(), want_dv.data(), dout.data(), want_out.data(),
                                     want_lse.data(), q.data(), k.data(), v.data(), s.B, s.n, s.H, s.D, spec);

  const int64_t Tc = s.n / P;
  std::vector<Rank> ranks(P);
  for (int c = 0; c < P; ++c) {
    Rank& r = ranks[c];
    r.plan = plan_ring_dilated_attention(spec, max_B, s.n, P, c, s.H, s.D);
    REQUIRE(r.plan.n_local == Tc);
    for (const RingBranchPlan& p : r.plan.branches) {  // batch outermost, every task inside the chunk
      REQUIRE(static_cast<int64_t>(p.tasks.size()) == max_B * p.tasks_per_batch);
      for (size_t t = 0; t < p.tasks.size(); ++t) {
        REQUIRE(p.tasks[t].lse_offset / (s.H * Tc) == static_cast<int64_t>(t) / p.tasks_per_batch);
        REQUIRE(p.tasks[t].q_offset + (p.tasks[t].nq - 1) * p.tasks[t].q_stride + s.D <= max_B * Tc * s.H * s.D);
      }
    }
    r.q = token_slice(q, s, c * Tc, Tc), r.k = token_slice(k, s, c * Tc, Tc), r.v = token_slice(v, s, c * Tc, Tc);
    r.dout = token_slice(dout, s, c * Tc, Tc);
    const int64_t chunk = s.B * Tc * s.H * s.D;
    for (Tensor* x : {&r.out, &r.dq, &r.dk, &r.dv}) x->assign(chunk, kNaN);
    r.lse.assign(s.B * s.H * Tc, kNaN);
    r.delta.assign(s.B * s.H * Tc, kNaN);
  }
  run_forward(ranks, s.B, s.D);
  run_backward(ranks, s.B, s.H, s.D);
  for (int c = 0; c < P; ++c) {
    const Rank& r = ranks[c];
    const std::string at = "rank " + std::to_string(c) + " of " + std::to_string(P) + ": ";
    require_equal(at + "out", r.out, token_slice(want_out, s, c * Tc, Tc), max_abs_finite(want_out));
    require_equal(at + "lse", r.lse, lse_slice(want_lse, s, c * Tc, Tc), max_abs_finite(want_lse));
    require_equal(at + "dq", r.dq, token_slice(want_dq, s, c * Tc, Tc), max_abs_finite(want_dq));
    require_equal(at + "dk", r.dk, token_slice(want_dk, s, c * Tc, Tc), max_abs_finite(want_dk));
    require_equal(at + "dv", r.dv, token_slice(want_dv, s, c * Tc, Tc), max_abs_finite(want_dv));
    RingBranchBytes total;
    for (size_t i = 0; i < spec.branches.size(); ++i) {
      const RingBranchBytes f =
          ring_branch_bytes_formula(spec, static_cast<int>(i), s.n, P, c, s.B, s.H, s.D, sizeof(double));
      total.forward += f.forward, total.backward += f.backward;
    }
    INFO(at, "bytes sent");
    CHECK(r.forward_bytes == total.forward);
    CHECK(r.backward_bytes == total.backward);
  }
}

// The branches of `all` whose segment divides n (spans of 2 and 4 chunks need that many ranks).
std::vector<DilatedBranch> fitting(const std::vector<DilatedBranch>& all, int64_t n) {
  std::vector<DilatedBranch> out;
  for (const DilatedBranch& b : all)
    if (n % b.segment_length == 0) out.push_back(b);
  return out;
}

}  // namespace

TEST_CASE("the GPU ring's plan, run on simulated ranks, reproduces dilated attention (fp64)") {
  constexpr int64_t kChunk = 16;
  struct Case {
    const char* name;
    std::vector<DilatedBranch> branches;  // those that divide n = P * kChunk are used; none: dense (n, 1)
    DilatedMode mode;
    int B, H, D;
  };
  const Case cases[] = {
      // Local (8), the chunk (16), spans of 2, 4 and 8 chunks with rates 1, 2, 4.
      {"longnet mixed", {{8, 1}, {16, 2}, {32, 1}, {64, 4}, {128, 2}}, DilatedMode::longnet, 2, 3, 8},
      {"longnet spanning only", {{32, 2}, {64, 1}, {128, 4}}, DilatedMode::longnet, 2, 2, 8},
      // No rate-1 branch: residues no head covers (out 0, lse -inf).
      {"longnet uncovered rows", {{16, 4}, {64, 4}}, DilatedMode::longnet, 1, 2, 8},
      {"dense", {}, DilatedMode::longnet, 2, 2, 8},
      {"head_groups uneven", {{8, 1}, {32, 2}, {64, 4}}, DilatedMode::head_groups, 2, 5, 8},
      {"head_groups ragged D", {{16, 1}, {64, 2}, {128, 1}}, DilatedMode::head_groups, 2, 4, 6},
  };
  for (int P : {1, 2, 4, 8}) {
    const int64_t n = P * kChunk;
    for (const Case& c : cases) {
      const std::vector<DilatedBranch> branches =
          c.branches.empty() ? std::vector<DilatedBranch>{{n, 1}} : fitting(c.branches, n);
      if (branches.empty() || (c.mode == DilatedMode::head_groups && static_cast<int>(branches.size()) > c.H)) continue;
      for (bool causal : {true, false}) {
        const DilatedSpec spec{branches, c.mode, causal};
        INFO(c.name, causal ? " causal" : " non-causal", " P=", P);
        check_ring(spec, {c.B, n, c.H, c.D}, P, c.B);
        check_ring(spec, {c.B, n, c.H, c.D}, P, c.B + 1);  // a call with B < max_B runs a prefix of the tasks
      }
    }
  }
}

TEST_CASE("ring steps: the block schedule of a segment") {
  // Non-causal ring of 4, position 1: holds blocks 1, 0, 3, 2; its own block comes home at step 4
  // from position 0, its last visitor.
  const RingSegment ring{4, 1, 4, false};
  CHECK(ring.origin(0) == 1);
  CHECK(ring.origin(1) == 0);
  CHECK(ring.origin(2) == 3);
  CHECK(ring.origin(3) == 2);
  const RingPlan plan = plan_ring_dilated_attention({{{64, 1}}, DilatedMode::longnet, false}, 1, 128, 8, 5, 2, 8);
  const RingBranchPlan& p = plan.branches[0];
  REQUIRE(p.spanning);
  CHECK(p.segment.g == 4);
  CHECK(p.segment.t == 1);
  CHECK(p.segment.base == 4);
  REQUIRE(p.backward_steps.size() == 5);
  CHECK(p.backward_steps[4].home.src == 4);
  CHECK(p.backward_steps[4].home.dst == 6);
  CHECK_FALSE(p.backward_steps[4].attend);
  for (int s = 0; s < 4; ++s) CHECK_FALSE(p.backward_steps[s].home.any());

  // Causal line of 4: position 3 receives blocks 3, 2, 1, 0, sends nothing forward, keeps its own
  // block's partial, and sends the others home one step after computing them.
  const RingPlan line = plan_ring_dilated_attention({{{64, 1}}, DilatedMode::longnet, true}, 1, 64, 4, 3, 2, 8);
  const RingBranchPlan& l = line.branches[0];
  CHECK(l.backward_steps[0].keep_own);
  CHECK(l.backward_steps[0].mask == BlockMask::causal);
  CHECK(l.backward_steps[1].mask == BlockMask::none);
  for (int s = 0; s < 4; ++s) CHECK(l.forward_steps[s].kv.dst == -1);
  CHECK(l.backward_steps[2].home.dst == 2);
  CHECK(l.backward_steps[3].home.dst == 1);
  CHECK(l.backward_steps[4].home.dst == 0);
  // Position 0 of the line gets its block home at step 4 from position 3.
  const RingPlan first = plan_ring_dilated_attention({{{64, 1}}, DilatedMode::longnet, true}, 1, 64, 4, 0, 2, 8);
  CHECK(first.branches[0].backward_steps[4].home.src == 3);
  CHECK_FALSE(first.branches[0].backward_steps[1].attend);
}

TEST_CASE("the ring plan refuses what cannot be split or run") {
  const DilatedSpec dense{{{64, 1}}, DilatedMode::longnet, true};
  CHECK_THROWS_AS(plan_ring_dilated_attention(dense, 1, 64, 3, 0, 2, 8), InputError);   // 64 % 3
  CHECK_THROWS_AS(plan_ring_dilated_attention(dense, 1, 64, 2, 0, 2, 129), InputError);  // D
  // Segment 24 and chunk 16 do not divide one another.
  CHECK_THROWS_AS(plan_ring_dilated_attention({{{24, 1}, {48, 1}}, DilatedMode::longnet, true}, 1, 48, 3, 0, 2, 8),
                  InputError);
  // A spanning segment whose rate does not divide the chunk of 16.
  CHECK_THROWS_AS(plan_ring_dilated_attention({{{32, 32}}, DilatedMode::longnet, true}, 1, 64, 4, 0, 2, 8),
                  InputError);
  CHECK_NOTHROW(plan_ring_dilated_attention(dense, 1, 64, 4, 3, 2, 8));
}
