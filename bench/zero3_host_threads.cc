// Host time of the ZeRO-3 engine's per-step work on the cpu tier, world of 1, GPT-2 124M shape
// (124M parameters), against the engine's host thread count (zero.host_threads): the AdamW step,
// the gradient sum of squares, scaling and zeroing the gradients, and the ParameterSource path
// (gathering every group, and handing every group's gradients back).
// Run (one rank, no mpirun): bazel run //bench:zero3_host_threads -- --benchmark_repetitions=5
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>

#include "comm/mpi_communicator.h"
#include "comm/mpi_runtime.h"
#include "core/rng.h"
#include "zero/zero3.h"

namespace dilatron {
namespace {

GptShape gpt2_124m() { return {.n_layers = 12, .d_model = 768, .n_heads = 12, .vocab_size = 50304, .seq_len = 1024, .d_ff = 0}; }

Communicator& world() {
  static const std::unique_ptr<Communicator> w = mpi_world_communicator();
  return *w;
}

// One engine at a time (2 GB of state), rebuilt when the thread count changes; its gradient
// shard holds small random values, as after a backward pass.
Zero3Engine& engine_with(int threads) {
  static std::unique_ptr<Zero3Engine> engine;
  static int engine_threads = 0;
  if (engine && engine_threads == threads) return *engine;
  engine.reset();
  Zero3Options o;
  o.params_tier = o.optimizer_tier = StorageTier::cpu;
  o.host_threads = threads;
  engine = std::make_unique<Zero3Engine>(gpt2_124m(), world(), o);
  engine_threads = threads;
  engine->init_parameters(1);
  engine->zero_gradients();
  CounterRng rng(7, 0);
  for (int g = 0; g < engine->num_groups(); ++g) {
    float* grad = engine->acquire_gradients(g);
    const int64_t n = gpt_group_offsets(gpt2_124m()).group_numel[g];
    for (int64_t i = 0; i < n; ++i) grad[i] = 1e-3f * (static_cast<float>(rng.uniform()) - 0.5f);
    engine->gradients_done(g);
  }
  return *engine;
}

void set_items(benchmark::State& state) {
  state.SetItemsProcessed(state.iterations() * gpt_num_params(gpt2_124m()));
}

void BM_AdamWStep(benchmark::State& state) {
  Zero3Engine& e = engine_with(static_cast<int>(state.range(0)));
  int64_t step = 1;
  for (auto _ : state) e.adamw_step(1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, step++);
  set_items(state);
}

void BM_GradientSumOfSquares(benchmark::State& state) {
  Zero3Engine& e = engine_with(static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(e.gradient_sum_of_squares());
  set_items(state);
}

// Factor 1: the gradients keep their values from one iteration to the next.
void BM_ScaleGradients(benchmark::State& state) {
  Zero3Engine& e = engine_with(static_cast<int>(state.range(0)));
  for (auto _ : state) e.scale_gradients(1.0f);
  set_items(state);
}

// Every group gathered (prefetching the next) and released, as one forward pass does.
void BM_GatherAllGroups(benchmark::State& state) {
  Zero3Engine& e = engine_with(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    for (int g = 0; g < e.num_groups(); ++g) e.will_acquire(g);
    for (int g = 0; g < e.num_groups(); ++g) {
      benchmark::DoNotOptimize(e.acquire(g));
      e.release(g);
    }
  }
  set_items(state);
}

// Every group's gradient buffer handed out (zeroed) and added into the shard, as one backward
// pass does; the buffers stay zero, so the shard keeps its values.
void BM_AccumulateGradients(benchmark::State& state) {
  Zero3Engine& e = engine_with(static_cast<int>(state.range(0)));
  for (auto _ : state)
    for (int g = e.num_groups() - 1; g >= 0; --g) {
      benchmark::DoNotOptimize(e.acquire_gradients(g));
      e.gradients_done(g);
    }
  set_items(state);
}

// Last, so that it leaves the shard at zero for nothing after it.
void BM_ZeroGradients(benchmark::State& state) {
  Zero3Engine& e = engine_with(static_cast<int>(state.range(0)));
  for (auto _ : state) e.zero_gradients();
  set_items(state);
}

void thread_counts(benchmark::internal::Benchmark* b) {
  b->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_AdamWStep)->Apply(thread_counts);
BENCHMARK(BM_GradientSumOfSquares)->Apply(thread_counts);
BENCHMARK(BM_ScaleGradients)->Apply(thread_counts);
BENCHMARK(BM_GatherAllGroups)->Apply(thread_counts);
BENCHMARK(BM_AccumulateGradients)->Apply(thread_counts);
BENCHMARK(BM_ZeroGradients)->Apply(thread_counts);

}  // namespace
}  // namespace dilatron

int main(int argc, char** argv) {
  dilatron::MpiRuntime mpi;
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
