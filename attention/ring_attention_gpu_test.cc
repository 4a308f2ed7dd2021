// The GPU ring dilated attention (RingDilatedAttentionCuda) against the CPU dilated attention in
// fp64 over the whole sequence, on 1, 2 and 4 ranks. Every rank draws the same full q, k, v, dout
// (Philox; rounded to bf16 first where T is bf16, so the error measured is the GPU's alone),
// computes the reference on the whole sequence, runs the ring on its chunk (outputs poisoned with
// NaN bits first) and compares its slice of out, lse, dq, dk, dv. Ranks share one GPU through the
// MPI transport (make_device_communicator(mpi): staged through host memory); when every rank has
// a GPU of its own, everything runs again over NCCL. Needs a GPU (tags = ["gpu"]).
//
// Tolerances (as attention_gpu_test.cc), on max |got - want| / max |want| over the whole tensor:
//   fp32 out, dq, dk, dv: 1e-5; bf16: 1e-2 (outputs rounded once to bf16; the backward's delta
//   comes from the bf16 out); lse: 1e-5 of max(1, max |lse|) in both (fp32, never rounded);
//   -inf lse entries (rows no key sees) must match exactly.
// Errors are reduced over ranks: rank 0 prints one line per tensor with the worst rank, and a
// failing rank prints where its worst element is (batch, global position, head, column).
//
// Also: bytes sent per branch against ring_branch_bytes_formula, score pairs summed over ranks
// against the single-rank plan, a repeated call and the serial schedule (RingSchedule::serial,
// parallel.overlap_ring=false) giving the same bits, the errors, and the overlap of communication
// and compute (printed; on ranks sharing one GPU through host staging it measures that setup, not
// NCCL on separate GPUs).
#include <doctest/doctest.h>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "attention/dilated_attention.h"
#include "attention/attention_gpu_test_support.h"
#include "attention/dilated_attention_cuda.h"
#include "attention/ring_dilated_attention.h"
#include "attention/ring_dilated_attention_cuda.h"
#include "comm/device_test_fixture.h"
#include "comm/gpu_placement.h"
#include "comm/mpi_check.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "core/bf16.h"
#include "core/check.h"
#include "core/cuda_check.h"
#include "core/rng.h"

namespace dilatron {
namespace {

using namespace attention_test;


// ---- the GPU, the transports ----

using device_test::Transport;

const device_test::GpuSetup& gpu_setup() { return device_test::gpu_setup("ring_attention_gpu_test"); }

// The whole world as one sequence-parallel group, on each transport.
struct RingFixture : device_test::DeviceFixture {
  RingFixture() : device_test::DeviceFixture("ring_attention_gpu_test") {}
};

double max_over_ranks(MpiCommunicator& host, double x) {
  host.all_reduce(&x, 1, DType::f64, ReduceOp::max);
  return x;
}
int64_t sum_over_ranks(MpiCommunicator& host, int64_t x) {
  double d = static_cast<double>(x);  // exact below 2^53
  host.all_reduce(&d, 1, DType::f64, ReduceOp::sum);
  return static_cast<int64_t>(d);
}

// ---- tensors ----

// Positions [begin, begin + len) of every batch element of a (B, n, H, D) tensor (token = H * D).
template <typename V>
std::vector<V> token_slice(const std::vector<V>& full, int B, int64_t n, int64_t token, int64_t begin, int64_t len) {
  std::vector<V> out;
  for (int b = 0; b < B; ++b)
    out.insert(out.end(), full.begin() + (b * n + begin) * token, full.begin() + (b * n + begin + len) * token);
  return out;
}
// lse (B, H, n): positions [begin, begin + len) of every (b, h) row.
std::vector<double> lse_slice(const std::vector<double>& full, int rows, int64_t n, int64_t begin, int64_t len) {
  std::vector<double> out;
  for (int64_t row = 0; row < rows; ++row)
    out.insert(out.end(), full.begin() + row * n + begin, full.begin() + row * n + begin + len);
  return out;
}

// ---- cases ----

constexpr int64_t kChunk = 96;  // tokens per rank: tiles of 64 rows with a ragged end at rate 1
constexpr int kB = 2;

struct Case {
  std::string name;
  std::vector<DilatedBranch> branches;  // those whose segment divides n = P * kChunk
  DilatedMode mode;
  int H, D;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      // Local (48), the chunk (96), spans of 2 and 4 chunks at rates 1 and 4.
      {"local+chunk+spanning r1,r4", {{48, 1}, {96, 2}, {192, 1}, {384, 4}}, DilatedMode::longnet, 3, 64},
      // Spanning rate 2; no rate-1 branch, so at P = 1 residue 3 of (96, 4) is covered by no head.
      {"spanning r2, uncovered rows", {{96, 4}, {192, 2}, {384, 4}}, DilatedMode::longnet, 3, 24},
      {"head_groups H=5", {{48, 1}, {192, 2}, {384, 4}}, DilatedMode::head_groups, 5, 64},
      {"head_groups ragged D", {{96, 1}, {192, 4}, {384, 2}}, DilatedMode::head_groups, 4, 24},
  };
  return all;
}

DilatedSpec spec_for(const Case& c, int64_t n, bool causal) {
  DilatedSpec spec{{}, c.mode, causal};
  for (const DilatedBranch& b : c.branches)
    if (n % b.segment_length == 0) spec.branches.push_back(b);
  return spec;
}

std::string describe(const Case& c, const DilatedSpec& spec, int P, int64_t n) {
  std::string s = c.name + (c.mode == DilatedMode::longnet ? " longnet" : " head_groups") +
                  (spec.causal ? " causal" : " non-causal") + " P=" + std::to_string(P) + " B=" + std::to_string(kB) +
                  " n=" + std::to_string(n) + " H=" + std::to_string(c.H) + " D=" + std::to_string(c.D) + " branches";
  for (const auto& [w, r] : spec.branches) s += " (" + std::to_string(w) + "," + std::to_string(r) + ")";
  return s;
}

// ---- comparison ----

// Where element i of a rank's slice is, in global coordinates: (b, position, h, d) for a
// (B, Tc, H, D) slice, (b, h, position) for lse (B, H, Tc).
std::string where(bool is_lse, size_t i, int64_t Tc, int H, int D, int64_t chunk_begin) {
  const int64_t x = static_cast<int64_t>(i);
  if (is_lse)
    return "(b,h,pos)=(" + std::to_string(x / (H * Tc)) + "," + std::to_string(x / Tc % H) + "," +
           std::to_string(chunk_begin + x % Tc) + ")";
  return "(b,pos,h,d)=(" + std::to_string(x / (Tc * H * D)) + "," + std::to_string(chunk_begin + x / (H * D) % Tc) +
         "," + std::to_string(x / D % H) + "," + std::to_string(x % D) + ")";
}

// The verdict over ranks for one tensor: rank 0 prints the worst error, a failing rank its element.
void report(MpiCommunicator& host, const std::string& what, const char* tensor, const std::vector<float>& got,
            const std::vector<double>& want, double scale, double tol, bool is_lse, int64_t Tc, int H, int D,
            int64_t chunk_begin) {
  const Comparison c = compare(got, want, scale);
  const double worst = max_over_ranks(host, c.error);
  const int64_t inf_mismatches = sum_over_ranks(host, c.inf_mismatches);
  const int rank = gpu_setup().rank;
  if (rank == 0)
    std::printf("%-4s %-120s max err over ranks %.3g (tol %.0e); -inf mismatches %lld\n", tensor, what.c_str(), worst,
                tol, static_cast<long long>(inf_mismatches));
  if (c.error > tol || c.inf_mismatches > 0)
    std::printf("  rank %d %s: err %.3g at %s got %.7g want %.7g\n", rank, tensor, c.error,
                where(is_lse, c.worst, Tc, H, D, chunk_begin).c_str(), got.empty() ? 0.0 : got[c.worst],
                want.empty() ? 0.0 : want[c.worst]);
  std::fflush(stdout);
  INFO(tensor, " ", what);
  CHECK(inf_mismatches == 0);
  CHECK(worst <= tol);
}

// Query-key pairs of the single-rank pattern (what the ranks together must score).
int64_t single_rank_pairs(const DilatedSpec& spec, int B, int64_t n, int H, int D) {
  int64_t pairs = 0;
  for (const DilatedLaunch& l : plan_dilated_attention(spec, B, n, H, D).launches) {
    const int64_t m = l.rows;
    pairs += l.tasks_per_batch * B * (spec.causal ? m * (m + 1) / 2 : m * m);
  }
  return pairs;
}

// Bytes this rank must send: K/V as T, dk/dv partials as fp32 (the formula's backward minus its
// forward is the dk/dv traffic).
RingBranchBytes expected_bytes(const DilatedSpec& spec, int branch, int64_t n, int P, int rank, int H, int D,
                               int64_t element_bytes) {
  const RingBranchBytes kv = ring_branch_bytes_formula(spec, branch, n, P, rank, kB, H, D, element_bytes);
  const RingBranchBytes fp32 = ring_branch_bytes_formula(spec, branch, n, P, rank, kB, H, D, 4);
  return {kv.forward, kv.forward + fp32.backward - fp32.forward};
}

// One case on one transport: forward + backward on this rank's chunk, twice, then once with the
// serial schedule (both must repeat the first call bit for bit: the serial schedule only makes each
// step's kernels wait for its transfers), against the fp64 reference over the whole sequence.
template <typename T>
void check_case(RingFixture& f, Transport& t, const Case& c, bool causal, int max_B, uint64_t seed) {
  const int P = t.comm->size(), rank = t.comm->rank();
  const int64_t n = P * kChunk, Tc = kChunk, token = static_cast<int64_t>(c.H) * c.D;
  const DilatedSpec spec = spec_for(c, n, causal);
  if (spec.branches.empty() || (c.mode == DilatedMode::head_groups && static_cast<int>(spec.branches.size()) > c.H))
    return;
  const std::string what = std::string(dtype_name<T>()) + " " + t.name + " " + describe(c, spec, P, n);
  const int64_t size = kB * n * token, lse_size = kB * c.H * n;
  const auto q = random_inputs<T>(seed, 0, size), k = random_inputs<T>(seed, 1, size);
  const auto v = random_inputs<T>(seed, 2, size), dout = random_inputs<T>(seed, 3, size);

  const std::vector<double> qd(q.begin(), q.end()), kd(k.begin(), k.end()), vd(v.begin(), v.end()),
      doutd(dout.begin(), dout.end());
  std::vector<double> out_ref(size), lse_ref(lse_size), dq_ref(size, 0.0), dk_ref(size, 0.0), dv_ref(size, 0.0);
  dilated_attention_forward<double>(out_ref.data(), lse_ref.data(), qd.data(), kd.data(), vd.data(), kB, n, c.H, c.D,
                                    spec);
  dilated_attention_backward<double>(dq_ref.data(), dk_ref.data(), dv_ref.data(), doutd.data(), out_ref.data(),
                                     lse_ref.data(), qd.data(), kd.data(), vd.data(), kB, n, c.H, c.D, spec);

  const int64_t begin = rank * Tc, chunk = kB * Tc * token;
  DeviceBuffer<T> q_dev(token_slice(q, kB, n, token, begin, Tc)), k_dev(token_slice(k, kB, n, token, begin, Tc));
  DeviceBuffer<T> v_dev(token_slice(v, kB, n, token, begin, Tc)), dout_dev(token_slice(dout, kB, n, token, begin, Tc));
  DeviceBuffer<T> out(chunk), dq(chunk), dk(chunk), dv(chunk);
  DeviceBuffer<float> lse(kB * c.H * Tc);
  RingDilatedAttentionCuda<T> ring(spec, max_B, n, c.H, c.D, *t.comm);
  RingDilatedAttentionCuda<T> serial(spec, max_B, n, c.H, c.D, *t.comm, RingSchedule::serial);
  std::vector<T> first[4];
  std::vector<float> first_lse;
  for (int call = 0; call < 3; ++call) {
    RingDilatedAttentionCuda<T>& r = call < 2 ? ring : serial;
    for (DeviceBuffer<T>* x : {&out, &dq, &dk, &dv}) x->poison(f.stream());
    lse.poison(f.stream());
    r.forward(out.get(), lse.get(), q_dev.get(), k_dev.get(), v_dev.get(), kB, static_cast<int>(Tc), c.H, c.D,
              f.stream());
    r.backward(dq.get(), dk.get(), dv.get(), dout_dev.get(), out.get(), lse.get(), q_dev.get(), k_dev.get(),
               v_dev.get(), kB, static_cast<int>(Tc), c.H, c.D, f.stream());
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(f.stream()));
    const std::vector<T> now[4] = {out.raw(), dq.raw(), dk.raw(), dv.raw()};
    const std::vector<float> lse_now = lse.raw();
    if (call == 0) {
      for (int i = 0; i < 4; ++i) first[i] = now[i];
      first_lse = lse_now;
      continue;
    }
    bool same = std::memcmp(lse_now.data(), first_lse.data(), lse_now.size() * sizeof(float)) == 0;
    for (int i = 0; i < 4; ++i)
      same = same && std::memcmp(now[i].data(), first[i].data(), now[i].size() * sizeof(T)) == 0;
    INFO((call == 1 ? "a second forward + backward repeats the first bit for bit: "
                    : "the serial schedule repeats the overlapped one bit for bit: "),
         what);
    CHECK(sum_over_ranks(f.host(), same ? 0 : 1) == 0);
  }

  const double tol = tolerance<T>();
  const int rows = kB * c.H;
  report(f.host(), what, "out", out.download(), token_slice(out_ref, kB, n, token, begin, Tc),
         max_abs_finite(out_ref, 0), tol, false, Tc, c.H, c.D, begin);
  report(f.host(), what, "lse", lse.download(), lse_slice(lse_ref, rows, n, begin, Tc), max_abs_finite(lse_ref, 1),
         kLseTolerance, true, Tc, c.H, c.D, begin);
  report(f.host(), what, "dq", dq.download(), token_slice(dq_ref, kB, n, token, begin, Tc), max_abs_finite(dq_ref, 0),
         tol, false, Tc, c.H, c.D, begin);
  report(f.host(), what, "dk", dk.download(), token_slice(dk_ref, kB, n, token, begin, Tc), max_abs_finite(dk_ref, 0),
         tol, false, Tc, c.H, c.D, begin);
  report(f.host(), what, "dv", dv.download(), token_slice(dv_ref, kB, n, token, begin, Tc), max_abs_finite(dv_ref, 0),
         tol, false, Tc, c.H, c.D, begin);

  // Bytes per branch on this rank; score pairs over all ranks.
  const RingCommStats& stats = ring.stats();
  REQUIRE(stats.branches.size() == spec.branches.size());
  int wrong_bytes = 0;
  for (size_t i = 0; i < spec.branches.size(); ++i) {
    const RingBranchBytes want = expected_bytes(spec, static_cast<int>(i), n, P, rank, c.H, c.D, sizeof(T));
    const RingBranchStats& got = stats.branches[i];
    if (got.forward_bytes_sent != want.forward || got.backward_bytes_sent != want.backward) {
      ++wrong_bytes;
      std::printf("  rank %d branch %zu: sent %lld / %lld bytes (forward / backward), formula %lld / %lld\n", rank, i,
                  static_cast<long long>(got.forward_bytes_sent), static_cast<long long>(got.backward_bytes_sent),
                  static_cast<long long>(want.forward), static_cast<long long>(want.backward));
    }
  }
  const int64_t pairs = single_rank_pairs(spec, kB, n, c.H, c.D);
  INFO("bytes and score pairs: ", what);
  CHECK(sum_over_ranks(f.host(), wrong_bytes) == 0);
  CHECK(serial.stats().forward_bytes_sent() == stats.forward_bytes_sent());
  CHECK(serial.stats().backward_bytes_sent() == stats.backward_bytes_sent());
  CHECK(sum_over_ranks(f.host(), stats.forward_score_pairs()) == pairs);
  CHECK(sum_over_ranks(f.host(), stats.backward_score_pairs()) == pairs);
}

template <typename T>
void check_all_cases(uint64_t seed) {
  RingFixture f;
  for (Transport& t : f.transports())
    for (const Case& c : cases())
      for (bool causal : {true, false}) {
        // max_B = B and max_B > B (a call with fewer sequences runs a prefix of the tasks).
        check_case<T>(f, t, c, causal, kB + static_cast<int>(seed % 2), seed);
        ++seed;
      }
}

// ---- overlap ----

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median over ranks-aligned repetitions of one call, then the slowest rank's median.
template <typename Call>
double median_ms_over_ranks(MpiCommunicator& host, cudaStream_t stream, Call call) {
  std::vector<double> times;
  for (int rep = 0; rep < 7; ++rep) {
    host.barrier();
    const double start = now_ms();
    call();
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (rep >= 2) times.push_back(now_ms() - start);  // two warm-ups
  }
  std::sort(times.begin(), times.end());
  return max_over_ranks(host, times[times.size() / 2]);
}

// How much of the communication the compute hides: the call timed as it is (all), with its
// transfers alone, and with its compute alone; hidden = (comm + compute - all) / comm. Also the
// call with the serial schedule, and hidden = (serial - all) / (serial - compute), the estimate
// bench/multi_gpu.sh's weak part makes from whole steps (there with the 1-GPU step as compute).
template <typename T>
void time_overlap(RingFixture& f, Transport& t) {
  const int P = t.comm->size();
  if (P == 1) {
    if (gpu_setup().rank == 0) std::printf("OVERLAP %s: one rank, nothing to communicate\n", t.name.c_str());
    return;
  }
  constexpr int64_t Tc = 8192;
  constexpr int B = 1, H = 12, D = 64;
  const int64_t n = P * Tc, chunk = B * Tc * H * D;
  const DilatedSpec spec{{{2048, 1}, {Tc, 2}, {n, 4}}, DilatedMode::longnet, false};
  DeviceBuffer<T> q(random_inputs<T>(9, 0, chunk)), k(random_inputs<T>(9, 1, chunk)), v(random_inputs<T>(9, 2, chunk)),
      dout(random_inputs<T>(9, 3, chunk));
  DeviceBuffer<T> out(chunk), dq(chunk), dk(chunk), dv(chunk);
  DeviceBuffer<float> lse(B * H * Tc);
  RingDilatedAttentionCuda<T> overlapped(spec, B, n, H, D, *t.comm);
  RingDilatedAttentionCuda<T> serial(spec, B, n, H, D, *t.comm, RingSchedule::serial);
  const int Tci = static_cast<int>(Tc);
  auto forward = [&](RingDilatedAttentionCuda<T>& ring) {
    ring.forward(out.get(), lse.get(), q.get(), k.get(), v.get(), B, Tci, H, D, f.stream());
  };
  auto backward = [&](RingDilatedAttentionCuda<T>& ring) {
    ring.backward(dq.get(), dk.get(), dv.get(), dout.get(), out.get(), lse.get(), q.get(), k.get(), v.get(), B, Tci, H,
                  D, f.stream());
  };
  forward(overlapped);  // a real out and lse for the backward
  for (const bool is_forward : {true, false}) {
    const char* pass = is_forward ? "forward" : "backward";
    auto call_on = [&](RingDilatedAttentionCuda<T>& ring) { is_forward ? forward(ring) : backward(ring); };
    auto call = [&] { call_on(overlapped); };
    double ms[4];
    const RingWork works[3] = {RingWork::all, RingWork::communication_only, RingWork::compute_only};
    for (int w = 0; w < 3; ++w) {
      overlapped.set_work(works[w]);
      ms[w] = median_ms_over_ranks(f.host(), f.stream(), call);
    }
    overlapped.set_work(RingWork::all);
    ms[3] = median_ms_over_ranks(f.host(), f.stream(), [&] { call_on(serial); });
    call();
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(f.stream()));
    const int64_t bytes =
        is_forward ? overlapped.stats().forward_bytes_sent() : overlapped.stats().backward_bytes_sent();
    const double hidden = ms[1] > 0 ? (ms[1] + ms[2] - ms[0]) / ms[1] : 0.0;
    const double hidden_serial = ms[3] > ms[2] ? (ms[3] - ms[0]) / (ms[3] - ms[2]) : 0.0;
    if (gpu_setup().rank == 0)
      std::printf("OVERLAP %s %s P=%d %s n=%lld (chunk %lld) B=%d H=%d D=%d branches (2048,1) (%lld,2) (%lld,4) "
                  "non-causal: all %.3f ms, communication alone %.3f ms (rank 0 sends %.2f MiB), compute alone "
                  "%.3f ms; hidden communication %.0f%%; serial schedule %.3f ms, hidden (serial - all) / (serial - "
                  "compute) %.0f%% (slowest rank's medians)\n",
                  t.name.c_str(), dtype_name<T>(), P, pass, static_cast<long long>(n), static_cast<long long>(Tc), B, H,
                  D, static_cast<long long>(Tc), static_cast<long long>(n), ms[0], ms[1],
                  static_cast<double>(bytes) / (1 << 20), ms[2], 100.0 * hidden, ms[3], 100.0 * hidden_serial);
    std::fflush(stdout);
    const std::vector<float> result = is_forward ? out.download() : dk.download();
    const bool finite = std::all_of(result.begin(), result.end(), [](float x) { return std::isfinite(x); });
    CHECK(finite);
  }
}

}  // namespace

TEST_CASE("ring dilated attention on the GPU matches the CPU over the whole sequence (fp32)") {
  check_all_cases<float>(1000);
}

TEST_CASE("ring dilated attention on the GPU matches the CPU over the whole sequence (bf16)") {
  check_all_cases<bf16>(2000);
}

TEST_CASE("the GPU ring refuses what it cannot run") {
  RingFixture f;
  for (Transport& t : f.transports()) {
    const int P = t.comm->size();
    const int64_t n = P * kChunk;
    INFO(t.name);
    CHECK_THROWS_AS(make_ring_dilated_attention_cuda<float>(dense_as_dilated(n, true), 1, n, 2, 129, *t.comm),
                    InputError);
    if (P == 1) continue;
    // A segment spanning ranks whose rate does not divide the chunk.
    CHECK_THROWS_AS(
        make_ring_dilated_attention_cuda<float>({{{n, n}}, DilatedMode::longnet, true}, 1, n, 2, 64, *t.comm),
        InputError);
    // Work queued on a stream the communicator does not order its transfers after: refused before
    // any transfer, on every rank.
    const auto ring = make_ring_dilated_attention_cuda<float>(dense_as_dilated(n, true), 1, n, 2, 64, *t.comm);
    CHECK_THROWS_AS(ring->forward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, static_cast<int>(kChunk), 2, 64,
                                  nullptr),
                    Error);
  }
}

TEST_CASE("timing: how much of the ring's communication the compute hides") {
  RingFixture f;
  for (Transport& t : f.transports()) {
    time_overlap<bf16>(f, t);
    time_overlap<float>(f, t);
  }
}

}  // namespace dilatron
#endif
