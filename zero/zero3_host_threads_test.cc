// Zero3Engine's host work gives the same bits whatever Zero3Options::host_threads: three
// optimizer steps (gradients handed back, gradient sum of squares, scaling, AdamW) with 1, 2
// and 7 threads, on the cpu tier and with the optimizer state streamed from NVMe; on one rank
// also against plain serial AdamW on the flat parameters.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "optim/adamw.h"
#include "zero/zero3.h"

using namespace dilatron;

namespace {

constexpr int kSteps = 3;
constexpr uint64_t kSeed = 99;
constexpr float kLr = 1e-2f, kBeta1 = 0.9f, kBeta2 = 0.95f, kEps = 1e-8f, kWeightDecay = 0.1f, kScale = 0.5f;

// Groups of several host chunks (the embedding 8, each block 3 to 4) on 1 and 2 ranks, with
// decayed and undecayed segments.
GptShape shape() { return {.n_layers = 2, .d_model = 128, .n_heads = 4, .vocab_size = 4096, .seq_len = 16, .d_ff = 0}; }

// Group g's gradient at step s, the same on every rank (so the world's sum is W times it).
std::vector<float> gradient(int step, int group, int64_t n) {
  CounterRng rng(kSeed, static_cast<uint64_t>(step) * 100 + static_cast<uint64_t>(group));
  std::vector<float> g(static_cast<size_t>(n));
  for (float& v : g) v = static_cast<float>(rng.normal());
  return g;
}

struct Result {
  std::vector<double> sums_of_squares;
  std::vector<float> params, m, v;
};

Result train(Communicator& world, const Zero3Options& options) {
  Zero3Engine engine(shape(), world, options);
  REQUIRE(engine.host_threads() == options.host_threads);
  engine.init_parameters(kSeed);
  const std::vector<int64_t> numel = gpt_group_offsets(shape()).group_numel;
  Result r;
  for (int step = 1; step <= kSteps; ++step) {
    engine.zero_gradients();
    for (int g = engine.num_groups() - 1; g >= 0; --g) {
      const std::vector<float> grad = gradient(step, g, numel[g]);
      std::memcpy(engine.acquire_gradients(g), grad.data(), grad.size() * sizeof(float));
      engine.gradients_done(g);
    }
    r.sums_of_squares.push_back(engine.gradient_sum_of_squares());
    engine.scale_gradients(kScale);
    engine.adamw_step(kLr, kBeta1, kBeta2, kEps, kWeightDecay, step);
  }
  engine.read_owned("params", r.params);
  engine.read_owned("adam_m", r.m);
  engine.read_owned("adam_v", r.v);
  return r;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

void check_same(const Result& got, const Result& want) {
  CHECK(same_bits(got.sums_of_squares, want.sums_of_squares));
  CHECK(same_bits(got.params, want.params));
  CHECK(same_bits(got.m, want.m));
  CHECK(same_bits(got.v, want.v));
}

Zero3Options cpu_tier(int threads) {
  Zero3Options o;
  o.params_tier = o.optimizer_tier = StorageTier::cpu;
  o.host_threads = threads;
  return o;
}

}  // namespace

TEST_CASE("the AdamW step and the gradient sum of squares are the same bits for 1, 2 and 7 host threads") {
  auto world = mpi_world_communicator();
  const Result one = train(*world, cpu_tier(1));
  for (int threads : {2, 7}) {
    CAPTURE(threads);
    check_same(train(*world, cpu_tier(threads)), one);
  }
  SUBCASE("the optimizer state streamed from NVMe, 7 threads") {
    const char* tmp = std::getenv("TEST_TMPDIR");
    REQUIRE(tmp != nullptr);
    Zero3Options o = cpu_tier(7);
    o.optimizer_tier = StorageTier::nvme;
    o.nvme.directory = std::string(tmp) + "/host_threads_rank" + std::to_string(world->rank());
    o.nvme.block_bytes = 4096;
    check_same(train(*world, o), one);
  }
}

TEST_CASE("on one rank the threaded step equals serial AdamW on the flat parameters") {
  auto world = mpi_world_communicator();
  if (world->size() != 1) return;
  const GptShape s = shape();
  const int64_t n = gpt_num_params(s);
  std::vector<float> params(static_cast<size_t>(n)), grads(static_cast<size_t>(n)), m(params.size(), 0.0f),
      v(params.size(), 0.0f);
  gpt_init_params(s, kSeed, params.data());
  const std::vector<int64_t> numel = gpt_group_offsets(s).group_numel;
  std::vector<double> sums;
  for (int step = 1; step <= kSteps; ++step) {
    int64_t offset = 0;  // groups lie back to back in the flat buffer
    for (size_t g = 0; g < numel.size(); ++g) {
      const std::vector<float> grad = gradient(step, static_cast<int>(g), numel[g]);
      std::copy(grad.begin(), grad.end(), grads.begin() + offset);
      offset += numel[g];
    }
    double sum = 0;
    for (float x : grads) sum += static_cast<double>(x) * x;
    sums.push_back(sum);
    for (float& x : grads) x *= kScale;
    for (const ParamSpec& p : gpt_param_specs(s)) {
      const AdamWStep a{kLr, kBeta1, kBeta2, kEps, p.weight_decay ? kWeightDecay : 0.0f, step};
      adamw_update_cpu(params.data() + p.offset, grads.data() + p.offset, m.data() + p.offset, v.data() + p.offset,
                       p.numel, a);
    }
  }
  const Result got = train(*world, cpu_tier(7));
  CHECK(same_bits(got.params, params));
  CHECK(same_bits(got.m, m));
  CHECK(same_bits(got.v, v));
  // The sum is chunked and laned, so it rounds differently from one chain: equal to double rounding.
  for (int step = 0; step < kSteps; ++step) CHECK(got.sums_of_squares[step] == doctest::Approx(sums[step]).epsilon(1e-12));
}
