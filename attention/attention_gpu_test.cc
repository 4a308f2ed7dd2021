// The CUDA dilated attention (make_dilated_attention_cuda) against the CPU dilated attention run
// in fp64 on the same inputs (rounded to bf16 first where T is bf16, so the error measured is the
// GPU's alone). Inputs are fresh Philox normals per case; every output (out, lse, dq, dk, dv) is
// poisoned with NaN bits first and every element is checked. Prints one line per case, dtype and
// tensor with the max error and where it is; then times forward and backward on two training
// shapes. Needs a GPU (tags = ["gpu"]).
//
// Tolerances, on max |got - want| / max |want| over a tensor:
//   fp32 out, dq, dk, dv: 1e-5 (fp32 sums over at most a few thousand keys with online-softmax
//     rescaling are good to ~1e-6 of the largest entry);
//   bf16 out, dq, dk, dv: 1e-2 (each output is rounded once to bf16, 2^-9 = 2e-3 relative, the
//     backward's delta comes from the bf16-rounded out, and at D = 64 and 128 the tensor-core
//     kernels round P and dS to bf16 before their products; ~5e-3 in a CPU emulation of them);
//   lse, both dtypes: 1e-5 of max(1, max |lse|): it is computed in fp32 from inputs that T holds
//     exactly, and never rounded to T. -inf entries (rows no key sees) must match exactly.
#include <doctest/doctest.h>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "attention/device_sequence_attention.h"
#include "attention/dilated_attention.h"
#include "attention/attention_gpu_test_support.h"
#include "attention/dilated_attention_cuda.h"
#include "core/bf16.h"
#include "core/check.h"
#include "core/cuda_check.h"
#include "core/cuda_timing.h"
#include "core/rng.h"

namespace dilatron {
namespace {

using namespace attention_test;


struct Case {
  std::string name;
  std::vector<DilatedBranch> branches;
  DilatedMode mode;
  int B;
  int64_t n;
  int H, D;
};

std::string describe(const Case& c, bool causal) {
  std::string s = c.name + (c.mode == DilatedMode::longnet ? " longnet" : " head_groups") +
                  (causal ? " causal" : " non-causal") + " B=" + std::to_string(c.B) + " n=" + std::to_string(c.n) +
                  " H=" + std::to_string(c.H) + " D=" + std::to_string(c.D) + " branches";
  for (const auto& [w, r] : c.branches) s += " (" + std::to_string(w) + "," + std::to_string(r) + ")";
  return s;
}

// Prints the comparison of a (B, n, H, D) tensor (D = 1 and layout (B, H, n) for lse) and checks it.
// Errors are relative to max(floor, max |finite want|).
void report(const std::string& what, const char* tensor, const std::vector<float>& got,
            const std::vector<double>& want, double floor, double tol, const char* index_names, int64_t d1,
            int64_t d2, int64_t d3) {
  const Comparison c = compare(got, want, max_abs_finite(want, floor));
  const size_t i = c.worst;
  std::printf("%-6s %-90s max err %.3g (tol %.0e) at %s=(%lld,%lld,%lld,%lld) got %.6g want %.6g; -inf mismatches "
              "%lld\n",
              tensor, what.c_str(), c.error, tol, index_names, static_cast<long long>(i / (d1 * d2 * d3)),
              static_cast<long long>(i / (d2 * d3) % d1), static_cast<long long>(i / d3 % d2),
              static_cast<long long>(i % d3), got.empty() ? 0.0 : got[i], want.empty() ? 0.0 : want[i],
              static_cast<long long>(c.inf_mismatches));
  INFO(tensor, " ", what);
  CHECK(c.inf_mismatches == 0);
  CHECK(c.error <= tol);
}

template <typename T>
void check_case(const Case& c, bool causal, uint64_t seed, int64_t ds_scratch_bytes = kDefaultDsScratchBytes) {
  const DilatedSpec spec{c.branches, c.mode, causal};
  std::string what = std::string(dtype_name<T>()) + " " + describe(c, causal);
  if (ds_scratch_bytes != kDefaultDsScratchBytes) what += " dS scratch " + std::to_string(ds_scratch_bytes) + " B";
  const int64_t size = c.B * c.n * c.H * c.D, lse_size = c.B * c.H * c.n;
  const auto q = random_inputs<T>(seed, 0, size), k = random_inputs<T>(seed, 1, size);
  const auto v = random_inputs<T>(seed, 2, size), dout = random_inputs<T>(seed, 3, size);

  // fp64 reference on exactly the values the GPU sees.
  const std::vector<double> qd(q.begin(), q.end()), kd(k.begin(), k.end()), vd(v.begin(), v.end()),
      doutd(dout.begin(), dout.end());
  std::vector<double> out_ref(size), lse_ref(lse_size), dq_ref(size, 0.0), dk_ref(size, 0.0), dv_ref(size, 0.0);
  dilated_attention_forward<double>(out_ref.data(), lse_ref.data(), qd.data(), kd.data(), vd.data(), c.B, c.n, c.H,
                                    c.D, spec);
  dilated_attention_backward<double>(dq_ref.data(), dk_ref.data(), dv_ref.data(), doutd.data(), out_ref.data(),
                                     lse_ref.data(), qd.data(), kd.data(), vd.data(), c.B, c.n, c.H, c.D, spec);

  DeviceBuffer<T> q_dev(q), k_dev(k), v_dev(v), dout_dev(dout);
  DeviceBuffer<T> out(size), dq(size), dk(size), dv(size);
  DeviceBuffer<float> lse(lse_size);
  for (DeviceBuffer<T>* buffer : {&out, &dq, &dk, &dv}) buffer->poison(nullptr);
  lse.poison(nullptr);
  cudaStream_t stream;
  DILATRON_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    const auto attention = make_dilated_attention_cuda<T>(spec, c.B, c.n, c.H, c.D, ds_scratch_bytes);
    attention->forward(out.get(), lse.get(), q_dev.get(), k_dev.get(), v_dev.get(), c.B, static_cast<int>(c.n), c.H,
                       c.D, stream);
    attention->backward(dq.get(), dk.get(), dv.get(), dout_dev.get(), out.get(), lse.get(), q_dev.get(), k_dev.get(),
                        v_dev.get(), c.B, static_cast<int>(c.n), c.H, c.D, stream);
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  DILATRON_CUDA_CHECK(cudaStreamDestroy(stream));

  const double tol = tolerance<T>();
  const char* bnhd = "(b,p,h,d)";
  const auto out_got = out.download(), lse_got = lse.download();
  report(what, "out", out_got, out_ref, 0.0, tol, bnhd, c.n, c.H, c.D);
  report(what, "lse", lse_got, lse_ref, 1.0, kLseTolerance, "(b,h,p,-)", c.H, c.n, 1);
  const auto dq_got = dq.download(), dk_got = dk.download(), dv_got = dv.download();
  report(what, "dq", dq_got, dq_ref, 0.0, tol, bnhd, c.n, c.H, c.D);
  report(what, "dk", dk_got, dk_ref, 0.0, tol, bnhd, c.n, c.H, c.D);
  report(what, "dv", dv_got, dv_ref, 0.0, tol, bnhd, c.n, c.H, c.D);
}

const std::vector<Case>& small_cases() {
  static const std::vector<Case> cases = {
      // One branch (n, 1): dense attention; 200 rows = three full tiles and a partial one.
      {"dense", {{200, 1}}, DilatedMode::longnet, 2, 200, 2, 64},
      {"dense D=128", {{130, 1}}, DilatedMode::longnet, 1, 130, 2, 128},
      {"rates 1,2,4", {{32, 1}, {128, 2}, {256, 4}}, DilatedMode::longnet, 2, 256, 4, 64},
      {"rate 1 listed second", {{128, 2}, {64, 1}}, DilatedMode::longnet, 1, 256, 3, 64},
      {"one branch of rate 2", {{64, 2}}, DilatedMode::longnet, 1, 128, 3, 64},
      // Rows of heads no branch covers: out 0, lse -inf.
      {"uncovered rows", {{16, 2}, {32, 4}}, DilatedMode::longnet, 2, 64, 1, 32},
      {"uneven groups H=5 G=3", {{32, 1}, {128, 2}, {256, 4}}, DilatedMode::head_groups, 2, 256, 5, 64},
      {"groups all rate 1", {{48, 1}, {96, 1}}, DilatedMode::head_groups, 2, 96, 3, 24},
      {"ragged n=96 D=24", {{48, 1}, {96, 2}}, DilatedMode::longnet, 2, 96, 3, 24},
      {"ragged n=96 D=128", {{48, 1}, {96, 2}}, DilatedMode::head_groups, 2, 96, 5, 128},
      // Several 64-row tiles per task, a partial last tile, and merges, at both head dimensions of
      // the bf16 tensor-core kernels: 200 and 5 x 64 dense rows, 200 and 80 dilated rows merged in.
      {"tiles and merges D=64", {{200, 1}, {400, 2}}, DilatedMode::longnet, 2, 400, 3, 64},
      {"tiles and merges D=128", {{320, 1}, {160, 2}}, DilatedMode::longnet, 1, 320, 2, 128},
  };
  return cases;
}

const Case kLarge{"large", {{512, 1}, {1024, 2}, {2048, 4}, {4096, 8}}, DilatedMode::longnet, 1, 4096, 12, 64};

// Query-key pairs the plan scores for batch size B (causal blocks: m (m + 1) / 2).
double score_pairs(const DilatedSpec& spec, int B, int64_t n, int H, int D) {
  double pairs = 0;
  for (const DilatedLaunch& l : plan_dilated_attention(spec, B, n, H, D).launches) {
    const double m = l.rows;
    pairs += static_cast<double>(l.tasks_per_batch) * B * (spec.causal ? m * (m + 1) / 2 : m * m);
  }
  return pairs;
}

// Forward and backward medians; TFLOP/s count 4 D FLOPs per scored pair forward (q.k and p v)
// and 10 D backward (the model count: recomputed scores, dV, dP, dQ, dK), as in docs/attention.md.
template <typename T>
void time_case(const char* name, const DilatedSpec& spec, int B, int64_t n, int H, int D,
               int64_t ds_scratch_bytes = kDefaultDsScratchBytes) {
  const int64_t size = B * n * H * D;
  DeviceBuffer<T> q(random_inputs<T>(7, 0, size)), k(random_inputs<T>(7, 1, size)), v(random_inputs<T>(7, 2, size)),
      dout(random_inputs<T>(7, 3, size));
  DeviceBuffer<T> out(size), dq(size), dk(size), dv(size);
  DeviceBuffer<float> lse(B * H * n);
  const auto attention = make_dilated_attention_cuda<T>(spec, B, n, H, D, ds_scratch_bytes);
  const int Tc = static_cast<int>(n);
  const double forward_ms = median_ms(
      [&] { attention->forward(out.get(), lse.get(), q.get(), k.get(), v.get(), B, Tc, H, D, nullptr); }, 3, 10);
  const double backward_ms = median_ms(
      [&] {
        attention->backward(dq.get(), dk.get(), dv.get(), dout.get(), out.get(), lse.get(), q.get(), k.get(), v.get(),
                            B, Tc, H, D, nullptr);
      },
      3, 10);
  const double pairs = score_pairs(spec, B, n, H, D);
  std::printf("TIMING %-34s %s B=%d n=%lld H=%d D=%d: forward %.3f ms (%.1f TFLOP/s), backward %.3f ms (%.1f "
              "TFLOP/s), forward+backward %.3f ms\n",
              name, dtype_name<T>(), B, static_cast<long long>(n), H, D, forward_ms,
              4.0 * D * pairs / (forward_ms * 1e-3) / 1e12, backward_ms, 10.0 * D * pairs / (backward_ms * 1e-3) / 1e12,
              forward_ms + backward_ms);

  // No atomics: a second backward gives the same bits; and nothing is NaN.
  const std::vector<T> dq_first = dq.raw(), dk_first = dk.raw();
  attention->backward(dq.get(), dk.get(), dv.get(), dout.get(), out.get(), lse.get(), q.get(), k.get(), v.get(), B,
                      Tc, H, D, nullptr);
  const std::vector<T> dq_second = dq.raw(), dk_second = dk.raw();
  INFO(name, " ", dtype_name<T>());
  CHECK(std::memcmp(dq_first.data(), dq_second.data(), dq_first.size() * sizeof(T)) == 0);
  CHECK(std::memcmp(dk_first.data(), dk_second.data(), dk_first.size() * sizeof(T)) == 0);
  for (const std::vector<float>& tensor : {out.download(), dq.download(), dk.download(), dv.download()}) {
    const bool finite = std::all_of(tensor.begin(), tensor.end(), [](float x) { return std::isfinite(x); });
    CHECK(finite);
  }
}

}  // namespace

TEST_CASE("dilated attention on the GPU matches the CPU (fp32)") {
  uint64_t seed = 100;
  for (const Case& c : small_cases())
    for (bool causal : {true, false}) check_case<float>(c, causal, ++seed);
}

TEST_CASE("dilated attention on the GPU matches the CPU (bf16)") {
  uint64_t seed = 200;
  for (const Case& c : small_cases())
    for (bool causal : {true, false}) check_case<bf16>(c, causal, ++seed);
}

// The bf16 backward keeps dS for dQ in a scratch (launch_block_attention_backward): the default
// holds each small case's launch whole; 160 KiB holds one or two tasks of 200 rows (80 KiB causal,
// 128 KiB not), so those launches run in chunks; 0 makes the dQ kernel recompute dS.
TEST_CASE("bf16 backward with its dS scratch in chunks of tasks, and without it") {
  uint64_t seed = 400;
  for (const int64_t bytes : {int64_t{160} << 10, int64_t{0}})
    for (const Case& c : small_cases())
      for (bool causal : {true, false}) check_case<bf16>(c, causal, ++seed, bytes);
}

TEST_CASE("dilated attention on the GPU matches the CPU at n = 4096, H = 12, four LongNet branches") {
  check_case<float>(kLarge, true, 301);
  check_case<float>(kLarge, false, 302);
  check_case<bf16>(kLarge, true, 303);
}

TEST_CASE("the GPU attention refuses shapes it cannot run") {
  CHECK_THROWS_AS(make_dilated_attention_cuda<float>(dense_as_dilated(64, true), 1, 64, 2, 136), InputError);
  CHECK_THROWS_AS(make_dilated_attention_cuda<bf16>(DilatedSpec{{{48, 1}}, DilatedMode::longnet, true}, 1, 64, 2, 64),
                  InputError);
  const auto attention = make_dilated_attention_cuda<float>(dense_as_dilated(64, true), 2, 64, 2, 64);
  // A different sequence length or a larger batch than it was built for is a bug of the caller.
  CHECK_THROWS_AS(attention->forward(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 32, 2, 64, nullptr), Error);
  CHECK_THROWS_AS(attention->forward(nullptr, nullptr, nullptr, nullptr, nullptr, 3, 64, 2, 64, nullptr), Error);
}

const DilatedSpec kLongnet32k{{{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}, {32768, 16}}, DilatedMode::longnet, true};

// Split by dtype so that `-tc='timing: bf16*'` times the tensor-core kernels alone (the fp32 cases
// take most of the test's time).
TEST_CASE("timing: bf16, dilated 32k (longnet and head_groups, causal) and dense 1024 (causal, D = 64 and 128)") {
  time_case<bf16>("dilated 32k longnet causal", kLongnet32k, 1, 32768, 12, 64);
  time_case<bf16>("dense causal", dense_as_dilated(1024, true), 8, 1024, 12, 64);
  // The GPT-2 124M micro-batch of configs/gpt2-124m-1k.yaml (bench/reference/attention_torch_bench.py
  // times PyTorch's flash SDPA at the same shape) and the 32k config's head_groups pattern.
  time_case<bf16>("dense causal", dense_as_dilated(1024, true), 16, 1024, 12, 64);
  time_case<bf16>("dilated 32k head_groups causal",
                  DilatedSpec{kLongnet32k.branches, DilatedMode::head_groups, true}, 1, 32768, 12, 64);
  // The same two without the dS scratch: the dQ kernel recomputes the scores and dP.
  time_case<bf16>("dense causal, dS recomputed", dense_as_dilated(1024, true), 16, 1024, 12, 64, 0);
  time_case<bf16>("dilated 32k head_groups, dS recomputed",
                  DilatedSpec{kLongnet32k.branches, DilatedMode::head_groups, true}, 1, 32768, 12, 64, 0);
  time_case<bf16>("dense causal", dense_as_dilated(1024, true), 8, 1024, 8, 128);
}

TEST_CASE("timing: fp32, dilated 32k (longnet, causal) and dense 1024 (causal)") {
  time_case<float>("dilated 32k longnet causal", kLongnet32k, 1, 32768, 12, 64);
  time_case<float>("dense causal", dense_as_dilated(1024, true), 8, 1024, 12, 64);
}

}  // namespace dilatron
#endif
