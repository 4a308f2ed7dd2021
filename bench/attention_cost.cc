// Forward + backward time of causal dilated attention (fixed branch list) and dense attention
// on the CPU against sequence length n: dilated grows linearly, dense quadratically.
// Shapes: B = 1, H = 4, D = 32, fp32. Run: bazel run -c opt //bench:attention_cost
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attention/dense_attention.h"
#include "attention/dilated_attention.h"
#include "core/rng.h"

namespace dilatron {
namespace {

constexpr int kBatch = 1, kHeads = 4, kHeadDim = 32;

// Segments capped at n so that the short sequences still form a valid spec.
DilatedSpec bench_spec(int64_t n) {
  DilatedSpec spec;
  for (const auto [w, r] : {DilatedBranch{256, 1}, DilatedBranch{512, 2}, DilatedBranch{1024, 4}})
    spec.branches.push_back({std::min(w, n), r});
  return spec;
}

// q, k, v, dout, out, dq, dk, dv (B, n, H, D) and lse (B, H, n).
struct Buffers {
  std::vector<float> q, k, v, dout, out, dq, dk, dv, lse;
  explicit Buffers(int64_t n) {
    const size_t size = static_cast<size_t>(kBatch * n * kHeads * kHeadDim);
    CounterRng rng(/*seed=*/1, /*stream=*/0);
    for (auto* x : {&q, &k, &v, &dout}) {
      x->resize(size);
      for (float& e : *x) e = static_cast<float>(rng.normal());
    }
    for (auto* x : {&out, &dq, &dk, &dv}) x->assign(size, 0.0f);
    lse.assign(static_cast<size_t>(kBatch * kHeads * n), 0.0f);
  }
};

// items_per_second is tokens per second; its inverse is the time per token.
void set_counters(benchmark::State& state, int64_t n) { state.SetItemsProcessed(state.iterations() * n); }

void BM_DilatedForwardBackward(benchmark::State& state) {
  const int64_t n = state.range(0);
  const DilatedSpec spec = bench_spec(n);
  Buffers b(n);
  for (auto _ : state) {
    dilated_attention_forward<float>(b.out.data(), b.lse.data(), b.q.data(), b.k.data(), b.v.data(), kBatch, n,
                                     kHeads, kHeadDim, spec);
    dilated_attention_backward<float>(b.dq.data(), b.dk.data(), b.dv.data(), b.dout.data(), b.out.data(),
                                      b.lse.data(), b.q.data(), b.k.data(), b.v.data(), kBatch, n, kHeads, kHeadDim,
                                      spec);
    benchmark::DoNotOptimize(b.dq.data());
  }
  set_counters(state, n);
}

void BM_DenseForwardBackward(benchmark::State& state) {
  const int64_t n = state.range(0);
  const AttentionDims dims{kBatch, static_cast<int>(n), kHeads, kHeadDim, /*causal=*/true};
  Buffers b(n);
  for (auto _ : state) {
    dense_attention_forward<float>(b.out.data(), b.lse.data(), b.q.data(), b.k.data(), b.v.data(), dims);
    dense_attention_backward<float>(b.dq.data(), b.dk.data(), b.dv.data(), b.dout.data(), b.out.data(),
                                    b.lse.data(), b.q.data(), b.k.data(), b.v.data(), dims);
    benchmark::DoNotOptimize(b.dq.data());
  }
  set_counters(state, n);
}

BENCHMARK(BM_DilatedForwardBackward)->RangeMultiplier(2)->Range(512, 16384)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DenseForwardBackward)->RangeMultiplier(2)->Range(512, 4096)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace dilatron

BENCHMARK_MAIN();
