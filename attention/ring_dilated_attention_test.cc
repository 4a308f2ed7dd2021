// Ring dilated attention against single-rank dilated attention, on 1, 2, 4 and 8 ranks. Every
// rank draws the same full q, k, v, dout (Philox, fixed seed), computes the single-rank result
// on the whole sequence and compares its chunk of the ring result with the slice of it. fp32,
// tolerance 1e-5 of the reference tensor's largest magnitude. Mismatches are counted per rank
// and summed over ranks, so every rank reaches the same verdict.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "attention/dilated_attention.h"
#include "attention/ring_dilated_attention.h"
#include "comm/mpi_communicator.h"
#include "core/check.h"
#include "core/rng.h"

namespace dilatron {
namespace {

constexpr int64_t kN = 64;  // n = 64: chunks of 64, 32, 16, 8 tokens at 1, 2, 4, 8 ranks
constexpr int kB = 2, kD = 8;
constexpr double kRelTol = 1e-5;
constexpr uint64_t kSeed = 20261127;

std::vector<float> normal_tensor(const std::string& name, int64_t count, float sigma) {
  std::vector<float> x(count);
  for (int64_t i = 0; i < count; ++i)
    x[i] = sigma * static_cast<float>(philox_normal(philox_key(kSeed), name_stream(name), static_cast<uint64_t>(i)));
  return x;
}

// Element (b, pos, h, d) of a (B, T, H, D) tensor is base[((b*T + pos)*H + h)*D + d].
std::vector<float> token_slice(const std::vector<float>& full, int B, int64_t n, int H, int D, int64_t begin,
                               int64_t len) {
  std::vector<float> out;
  const int64_t token = static_cast<int64_t>(H) * D;
  for (int b = 0; b < B; ++b)
    out.insert(out.end(), full.begin() + (b * n + begin) * token, full.begin() + (b * n + begin + len) * token);
  return out;
}

// lse (B, H, T): the positions [begin, begin + len) of every (b, h) row.
std::vector<float> lse_slice(const std::vector<float>& full, int B, int64_t n, int H, int64_t begin, int64_t len) {
  std::vector<float> out;
  for (int64_t row = 0; row < static_cast<int64_t>(B) * H; ++row)
    out.insert(out.end(), full.begin() + row * n + begin, full.begin() + row * n + begin + len);
  return out;
}

float max_abs_finite(const std::vector<float>& x) {
  float m = 0;
  for (float v : x)
    if (std::isfinite(v)) m = std::max(m, std::fabs(v));
  return m;
}

// Elements of `got` off `want` by more than kRelTol * scale; -inf must match exactly.
int64_t mismatches(const std::vector<float>& got, const std::vector<float>& want, float scale) {
  int64_t bad = got.size() != want.size() ? 1 : 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    if (std::isinf(want[i])) {
      bad += got[i] != want[i];
    } else {
      bad += !(std::fabs(got[i] - want[i]) <= kRelTol * scale);
    }
  }
  return bad;
}

int64_t sum_over_ranks(Communicator& comm, int64_t x) {
  double v = static_cast<double>(x);
  comm.all_reduce(&v, 1, DType::f64, ReduceOp::sum);
  return static_cast<int64_t>(v);
}

struct Case {
  const char* name;
  DilatedSpec spec;
  int H;
};

// Segments smaller than, equal to and larger than a chunk at every rank count; r > 1 on
// spanning branches; both modes, causal or not; uneven head groups; uncovered positions.
std::vector<Case> cases() {
  const std::vector<DilatedBranch> all_scales = {{4, 1}, {8, 2}, {16, 2}, {32, 4}, {64, 8}};
  return {
      {"longnet causal, w 4..64", {all_scales, DilatedMode::longnet, true}, 4},
      {"longnet non-causal, w 4..64", {all_scales, DilatedMode::longnet, false}, 4},
      {"head_groups causal, 4 heads in 3 groups", {{{8, 1}, {32, 2}, {64, 4}}, DilatedMode::head_groups, true}, 4},
      {"head_groups non-causal, 5 heads in 2 groups", {{{16, 2}, {64, 1}}, DilatedMode::head_groups, false}, 5},
      {"head_groups non-causal, 6 heads in 4 groups",
       {{{4, 1}, {8, 1}, {32, 2}, {64, 8}}, DilatedMode::head_groups, false},
       6},
      {"dense causal as one branch", dense_as_dilated(kN, true), 2},
      {"longnet causal, residues 2 and 3 uncovered", {{{32, 4}}, DilatedMode::longnet, true}, 2},
  };
}

void check_case(const Case& c, Communicator& world) {
  const int P = world.size(), H = c.H;
  const int64_t n_local = kN / P, begin = world.rank() * n_local;
  const int64_t numel = kB * kN * H * kD, lse_numel = kB * H * kN;
  const std::vector<float> q = normal_tensor("q", numel, 1.0f), k = normal_tensor("k", numel, 1.0f),
                           v = normal_tensor("v", numel, 1.0f), dout = normal_tensor("dout", numel, 1.0f);

  std::vector<float> ref_out(numel), ref_lse(lse_numel), ref_dq(numel, 0.0f), ref_dk(numel, 0.0f),
      ref_dv(numel, 0.0f);
  dilated_attention_forward(ref_out.data(), ref_lse.data(), q.data(), k.data(), v.data(), kB, kN, H, kD, c.spec);
  dilated_attention_backward(ref_dq.data(), ref_dk.data(), ref_dv.data(), dout.data(), ref_out.data(),
                             ref_lse.data(), q.data(), k.data(), v.data(), kB, kN, H, kD, c.spec);

  auto mine = [&](const std::vector<float>& full) { return token_slice(full, kB, kN, H, kD, begin, n_local); };
  const std::vector<float> q_c = mine(q), k_c = mine(k), v_c = mine(v), dout_c = mine(dout);
  const int64_t chunk_numel = kB * n_local * H * kD;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out(chunk_numel, nan), lse(kB * H * n_local, nan);
  // Gradients accumulate: start from random values and compare the increments.
  const std::vector<float> dq0 = mine(normal_tensor("dq0", numel, 0.1f)), dk0 = mine(normal_tensor("dk0", numel, 0.1f)),
                           dv0 = mine(normal_tensor("dv0", numel, 0.1f));
  std::vector<float> dq = dq0, dk = dk0, dv = dv0;

  RingDilatedAttention<float> ring(c.spec, kN, world);
  ring.forward(out.data(), lse.data(), q_c.data(), k_c.data(), v_c.data(), kB, static_cast<int>(n_local), H, kD);
  ring.backward(dq.data(), dk.data(), dv.data(), dout_c.data(), out.data(), lse.data(), q_c.data(), k_c.data(),
                v_c.data(), kB, static_cast<int>(n_local), H, kD);
  for (int64_t i = 0; i < chunk_numel; ++i) {
    dq[i] -= dq0[i];
    dk[i] -= dk0[i];
    dv[i] -= dv0[i];
  }

  struct Compared {
    const char* what;
    const std::vector<float>& got;
    std::vector<float> want;
    float scale;
  };
  const Compared compared[] = {
      {"out", out, mine(ref_out), max_abs_finite(ref_out)},
      {"lse", lse, lse_slice(ref_lse, kB, kN, H, begin, n_local), max_abs_finite(ref_lse)},
      {"dq", dq, mine(ref_dq), max_abs_finite(ref_dq)},
      {"dk", dk, mine(ref_dk), max_abs_finite(ref_dk)},
      {"dv", dv, mine(ref_dv), max_abs_finite(ref_dv)},
  };
  for (const Compared& x : compared) {
    INFO(std::string(c.name), ", ", std::string(x.what), ", ", P, " ranks");
    REQUIRE(x.scale > 0.0f);  // a reference of zeros would make the comparison vacuous
    CHECK(sum_over_ranks(world, mismatches(x.got, x.want, x.scale)) == 0);
  }

  for (size_t i = 0; i < c.spec.branches.size(); ++i) {
    INFO(std::string(c.name), ", branch ", i, ", rank ", world.rank(), " of ", P);
    const RingBranchBytes expected = ring_branch_bytes_formula(c.spec, static_cast<int>(i), kN, P, world.rank(), kB,
                                                               H, kD, sizeof(float));
    CHECK(ring.stats().branches[i].forward_bytes_sent == expected.forward);
    CHECK(ring.stats().branches[i].backward_bytes_sent == expected.backward);
  }
}

TEST_CASE("ring dilated attention: each rank's chunk equals the slice of single-rank dilated attention") {
  const auto world = mpi_world_communicator();
  for (const Case& c : cases()) check_case(c, *world);
}

// The formula of docs/attention.md, written out for one branch (w = n, r = 2) spanning every
// rank: S = B * H * (n_local / r) * D * 4 bytes is one packed tensor; rank t of g = P sends
//   non-causal: forward 2S(g-1), backward 2S(2g-1)
//   causal:     forward 2S(t+1), backward 4S(t+1) for t < g-1; forward 0, backward 2S(g-1) for t = g-1.
TEST_CASE("ring dilated attention: bytes sent for a spanning branch follow the documented formula") {
  const auto world = mpi_world_communicator();
  const int P = world->size(), t = world->rank(), H = 4;
  const int64_t n_local = kN / P, numel = kB * n_local * H * kD;
  const int64_t S = kB * H * (n_local / 2) * kD * 4;
  for (bool causal : {false, true}) {
    INFO("causal ", causal, ", rank ", t, " of ", P);
    const DilatedSpec spec{{{kN, 2}}, DilatedMode::longnet, causal};
    const std::vector<float> x = normal_tensor("x", numel, 1.0f);
    std::vector<float> out(numel), lse(kB * H * n_local), dq(numel), dk(numel), dv(numel);
    RingDilatedAttention<float> ring(spec, kN, *world);
    ring.forward(out.data(), lse.data(), x.data(), x.data(), x.data(), kB, static_cast<int>(n_local), H, kD);
    ring.backward(dq.data(), dk.data(), dv.data(), x.data(), out.data(), lse.data(), x.data(), x.data(), x.data(), kB,
                  static_cast<int>(n_local), H, kD);
    const int64_t g = P;
    int64_t forward = 0, backward = 0;
    if (g > 1 && !causal) {
      forward = 2 * S * (g - 1);
      backward = 2 * S * (2 * g - 1);
    } else if (g > 1 && t < g - 1) {
      forward = 2 * S * (t + 1);
      backward = 4 * S * (t + 1);
    } else if (g > 1) {
      backward = 2 * S * (g - 1);
    }
    CHECK(ring.stats().forward_bytes_sent() == forward);
    CHECK(ring.stats().backward_bytes_sent() == backward);
    // Causal skipping drops whole blocks, never pairs a query needs: the ranks together score
    // every (query, key) pair of the single-rank pattern exactly once.
    const int64_t m = kN / 2;  // the queries (and keys) of one head: one residue of 2
    const int64_t pairs = kB * H * (causal ? m * (m + 1) / 2 : m * m);
    CHECK(sum_over_ranks(*world, ring.stats().forward_score_pairs()) == pairs);
  }
}

// RingSchedule::serial waits for each transfer before the step that issued it computes. Only the
// order of events changes, so out, lse and the gradients must equal the overlapped schedule's bit
// for bit, as must the bytes sent. n = 512, D = 32: the spanning branch's messages (8 KiB at 8
// ranks for a one-head group, up to 128 KiB at 2) exceed Open MPI's eager limit (4 KiB), so a
// serial schedule that waited for a send before its receiver had posted the receive would hang
// (and fail at mpirun_test's timeout) instead of passing on buffered messages.
TEST_CASE("ring dilated attention: the serial schedule gives the overlapped schedule's results bit for bit") {
  const auto world = mpi_world_communicator();
  constexpr int64_t n = 512;
  constexpr int D = 32;
  const int P = world->size(), H = 4;
  const int64_t n_local = n / P, begin = world->rank() * n_local;
  const int64_t numel = kB * n * H * D, chunk_numel = kB * n_local * H * D;
  auto mine = [&](const std::vector<float>& full) { return token_slice(full, kB, n, H, D, begin, n_local); };
  const std::vector<float> q = mine(normal_tensor("q", numel, 1.0f)), k = mine(normal_tensor("k", numel, 1.0f)),
                           v = mine(normal_tensor("v", numel, 1.0f)), dout = mine(normal_tensor("dout", numel, 1.0f));
  // Local at every rank count (32), a chunk or spanning 2 chunks (128), spanning every rank (512).
  const std::vector<DilatedBranch> branches = {{32, 1}, {128, 2}, {512, 4}};
  for (DilatedMode mode : {DilatedMode::longnet, DilatedMode::head_groups})
    for (bool causal : {true, false}) {
      const DilatedSpec spec{branches, mode, causal};
      struct Run {
        std::vector<float> tensors[5];  // out, lse, dq, dk, dv
        int64_t forward_bytes = 0, backward_bytes = 0;
      };
      auto run = [&](RingSchedule schedule) {
        Run r;
        auto& [out, lse, dq, dk, dv] = r.tensors;
        for (std::vector<float>* t : {&out, &dq, &dk, &dv}) t->assign(chunk_numel, 0.0f);
        lse.assign(kB * H * n_local, 0.0f);
        RingDilatedAttention<float> ring(spec, n, *world, schedule);
        const int Tc = static_cast<int>(n_local);
        ring.forward(out.data(), lse.data(), q.data(), k.data(), v.data(), kB, Tc, H, D);
        ring.backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(),
                      v.data(), kB, Tc, H, D);
        r.forward_bytes = ring.stats().forward_bytes_sent();
        r.backward_bytes = ring.stats().backward_bytes_sent();
        return r;
      };
      const Run overlap = run(RingSchedule::overlap), serial = run(RingSchedule::serial);
      const char* names[5] = {"out", "lse", "dq", "dk", "dv"};
      for (int i = 0; i < 5; ++i) {
        const std::vector<float>& a = overlap.tensors[i];
        const std::vector<float>& b = serial.tensors[i];
        int64_t differing = 0;
        for (size_t j = 0; j < a.size(); ++j) differing += std::memcmp(&a[j], &b[j], sizeof(float)) != 0;
        INFO(std::string(mode == DilatedMode::longnet ? "longnet" : "head_groups"),
             std::string(causal ? " causal, " : " non-causal, "), std::string(names[i]), ", ", P, " ranks");
        CHECK(sum_over_ranks(*world, differing) == 0);
      }
      CHECK(serial.forward_bytes == overlap.forward_bytes);
      CHECK(serial.backward_bytes == overlap.backward_bytes);
    }
}

template <typename F>
std::string input_error_message(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "no InputError";
}

TEST_CASE("ring dilated attention: a spec that cannot be split across the ranks is an InputError naming the key") {
  const auto world = mpi_world_communicator();
  const int P = world->size();
  if (P == 1) return;  // one rank holds everything: every valid spec splits
  const DilatedSpec dense = dense_as_dilated(kN, true);
  CHECK(input_error_message([&] { RingDilatedAttention<float>(dense_as_dilated(kN + 1, true), kN + 1, *world); })
            .find("parallel.sequence_parallel") != std::string::npos);
  // n = 96: chunks of 48, 24, 12 tokens; a segment of 32 neither fits in nor tiles whole chunks.
  const DilatedSpec uneven{{{32, 1}}, DilatedMode::longnet, true};
  CHECK(input_error_message([&] { RingDilatedAttention<float>(uneven, 96, *world); }).find("attention.segment_lengths") !=
        std::string::npos);
  // A spanning segment of n tokens with dilation n: r = n does not divide a chunk of n/P < n.
  const DilatedSpec sparse{{{kN, kN}}, DilatedMode::longnet, true};
  CHECK(input_error_message([&] { RingDilatedAttention<float>(sparse, kN, *world); }).find("attention.dilation_rates") !=
        std::string::npos);
  CHECK(input_error_message([&] { RingDilatedAttention<float>(dense, kN, *world); }) == "no InputError");
}

}  // namespace
}  // namespace dilatron
