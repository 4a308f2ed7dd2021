// Bytes each rank sends in one forward + backward of ring dilated attention, measured (counted
// at every send) against the formula of docs/attention.md ("Ring dilated attention"), and the
// query-key pairs each rank scores (the compute imbalance of causal skipping).
//
// Run: mpirun -np P bazel-bin/bench/ring_comm_bytes   (P divides 2048; rank 0 prints the tables)
// Exit status 1 if any measured byte count differs from the formula.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <vector>

#include "attention/ring_dilated_attention.h"
#include "comm/mpi_communicator.h"
#include "core/rng.h"

namespace dilatron {
namespace {

constexpr int64_t kN = 2048;
constexpr int kB = 1, kH = 8, kD = 32;

// Segments of 256..2048 tokens: local at P = 2, spanning 2, 4 and 8 ranks at P = 8.
DilatedSpec bench_spec(bool causal) {
  return {{{256, 1}, {512, 2}, {1024, 4}, {2048, 8}}, DilatedMode::longnet, causal};
}

std::vector<float> normal_tensor(uint64_t stream, int64_t count) {
  std::vector<float> x(count);
  for (int64_t i = 0; i < count; ++i) x[i] = static_cast<float>(philox_normal(philox_key(7), stream, i));
  return x;
}

// Per rank and branch: measured fwd, formula fwd, measured bwd, formula bwd, fwd pairs, bwd pairs.
constexpr int kFields = 6;

// Returns the number of (rank, branch) entries whose measured bytes differ from the formula.
int run(Communicator& world, bool causal) {
  const int P = world.size(), rank = world.rank();
  const int64_t n_local = kN / P, numel = kB * n_local * kH * kD;
  const DilatedSpec spec = bench_spec(causal);
  const std::vector<float> q = normal_tensor(1 + rank, numel), k = normal_tensor(101 + rank, numel),
                           v = normal_tensor(201 + rank, numel), dout = normal_tensor(301 + rank, numel);
  std::vector<float> out(numel), lse(kB * kH * n_local), dq(numel), dk(numel), dv(numel);
  RingDilatedAttention<float> ring(spec, kN, world);
  ring.forward(out.data(), lse.data(), q.data(), k.data(), v.data(), kB, static_cast<int>(n_local), kH, kD);
  ring.backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(), v.data(), kB,
                static_cast<int>(n_local), kH, kD);

  const int nb = static_cast<int>(spec.branches.size());
  std::vector<double> mine(nb * kFields), all(static_cast<size_t>(P) * nb * kFields);
  for (int i = 0; i < nb; ++i) {
    const RingBranchStats& s = ring.stats().branches[i];
    const RingBranchBytes f = ring_branch_bytes_formula(spec, i, kN, P, rank, kB, kH, kD, sizeof(float));
    const double row[kFields] = {double(s.forward_bytes_sent), double(f.forward), double(s.backward_bytes_sent),
                                 double(f.backward), double(s.forward_score_pairs), double(s.backward_score_pairs)};
    std::copy(row, row + kFields, mine.begin() + i * kFields);
  }
  world.all_gather(mine.data(), all.data(), nb * kFields, DType::f64);

  int wrong = 0;
  for (int r = 0; r < P; ++r)
    for (int i = 0; i < nb; ++i) {
      const double* e = all.data() + (r * nb + i) * kFields;
      wrong += (e[0] != e[1]) + (e[2] != e[3]);
    }
  if (rank != 0) return wrong;

  std::printf("\nP=%d causal=%d  n=%lld B=%d H=%d D=%d fp32, n_local=%lld, longnet branches (w,r):", P, causal ? 1 : 0,
              static_cast<long long>(kN), kB, kH, kD, static_cast<long long>(n_local));
  for (const DilatedBranch& br : spec.branches)
    std::printf(" (%lld,%lld)", static_cast<long long>(br.segment_length), static_cast<long long>(br.dilation));
  std::printf("\n%4s %6s %6s %3s %12s %12s %12s %12s %14s %12s %12s\n", "rank", "w", "r", "g", "fwd_sent",
              "fwd_formula", "bwd_sent", "bwd_formula", "full_kv_fwd", "fwd_pairs", "bwd_pairs");
  for (int r = 0; r < P; ++r) {
    double fwd = 0, bwd = 0, fwd_formula = 0, bwd_formula = 0, pairs = 0;
    for (int i = 0; i < nb; ++i) {
      const double* e = all.data() + (r * nb + i) * kFields;
      const DilatedBranch& br = spec.branches[i];
      const int64_t g = br.segment_length > n_local ? br.segment_length / n_local : 1;
      // What the same schedule sends with the chunk's whole K and V (no sparsification): r times more.
      const double full_kv = e[1] * static_cast<double>(br.dilation);
      std::printf("%4d %6lld %6lld %3lld %12.0f %12.0f %12.0f %12.0f %14.0f %12.0f %12.0f%s\n", r,
                  static_cast<long long>(br.segment_length), static_cast<long long>(br.dilation),
                  static_cast<long long>(g), e[0], e[1], e[2], e[3], full_kv, e[4], e[5],
                  e[0] != e[1] || e[2] != e[3] ? "  MISMATCH" : "");
      fwd += e[0];
      fwd_formula += e[1];
      bwd += e[2];
      bwd_formula += e[3];
      pairs += e[4];
    }
    std::printf("%4d %6s %6s %3s %12.0f %12.0f %12.0f %12.0f %14s %12.0f\n", r, "all", "", "", fwd, fwd_formula, bwd,
                bwd_formula, "", pairs);
  }
  double max_pairs = 0, sum_pairs = 0, max_bytes = 0, sum_bytes = 0;
  for (int r = 0; r < P; ++r) {
    double pairs = 0, bytes = 0;
    for (int i = 0; i < nb; ++i) {
      pairs += all[(r * nb + i) * kFields + 4];
      bytes += all[(r * nb + i) * kFields + 0] + all[(r * nb + i) * kFields + 2];
    }
    max_pairs = std::max(max_pairs, pairs);
    sum_pairs += pairs;
    max_bytes = std::max(max_bytes, bytes);
    sum_bytes += bytes;
  }
  std::printf("compute imbalance (max/mean forward pairs over ranks): %.3f; bytes fwd+bwd: max %.0f, mean %.0f; %s\n",
              max_pairs / (sum_pairs / P), max_bytes, sum_bytes / P, wrong ? "FORMULA MISMATCH" : "all match formula");
  return wrong;
}

}  // namespace
}  // namespace dilatron

int main() {
  dilatron::MpiRuntime mpi;
  try {
    const auto world = dilatron::mpi_world_communicator();
    int wrong = 0;
    for (bool causal : {false, true}) wrong += dilatron::run(*world, causal);
    return wrong == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ring_comm_bytes: %s\n", e.what());
    dilatron::MpiRuntime::abort(1);  // the other ranks may be waiting in a transfer
  }
}
