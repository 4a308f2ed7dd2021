// ZeRO-3 against a single rank without partitioning: 20 training steps (forward/backward over
// the rank's share of a fixed global batch, global gradient norm, clipping, AdamW) on 1, 2 and 4
// ranks, dense and sequence-parallel, with replicated groups and several prefetch depths;
// every storage tier bitwise equal to the device tier; the memory report; residency checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "attention/dilated_spec.h"
#include "attention/ring_dilated_attention.h"
#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "core/check.h"
#include "core/rng.h"
#include "model/gpt.h"
#include "optim/adamw.h"
#include "optim/grad_norm.h"
#include "zero/zero3.h"

using namespace dilatron;

namespace {

constexpr int kSteps = 20, kBatch = 4;
constexpr uint64_t kSeed = 1234;
constexpr float kBeta1 = 0.9f, kBeta2 = 0.95f, kEps = 1e-8f, kWeightDecay = 0.1f, kMaxNorm = 0.5f;

GptShape tiny_shape() {
  GptShape s{.n_layers = 2, .d_model = 16, .n_heads = 2, .vocab_size = 17, .seq_len = 8, .d_ff = 0};
  s.init_std = 0.1;
  return s;
}

// Decays linearly so every step's update differs.
float lr_at_step(int step) { return 3e-3f * (1.0f - static_cast<float>(step) / (2 * kSteps)); }

// (kBatch, T) tokens and targets of step `step`, the same on every rank.
void global_batch(const GptShape& s, int step, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) {
  CounterRng rng(kSeed, /*stream=*/100 + static_cast<uint64_t>(step));
  tokens.resize(static_cast<size_t>(kBatch) * s.seq_len);
  targets.resize(tokens.size());
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(s.vocab_size)));
  for (int32_t& t : targets) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(s.vocab_size)));
}

struct Run {
  std::vector<double> losses;
  std::vector<float> final_params;  // full flat parameters (reference) or this rank's owned part (ZeRO)
  std::vector<float> final_m, final_v;
};

// One rank, no partitioning, the whole batch at once: the reference.
Run reference_run(const GptShape& s) {
  Gpt<float> model(s, kBatch);
  gpt_init_params(s, kSeed, model.params());
  const int64_t n = model.num_params();
  std::vector<float> m(static_cast<size_t>(n), 0.0f), v(static_cast<size_t>(n), 0.0f);
  std::vector<int32_t> tokens, targets;
  const double token_weight = 1.0 / (kBatch * s.seq_len);
  Run run;
  for (int step = 0; step < kSteps; ++step) {
    global_batch(s, step, tokens, targets);
    model.zero_grads();
    run.losses.push_back(model.forward(tokens.data(), targets.data(), kBatch, s.seq_len) * token_weight);
    model.backward(token_weight);
    const float clip = clip_coefficient(std::sqrt(sum_of_squares_cpu(model.grads(), n)), kMaxNorm);
    if (clip < 1.0f)
      for (int64_t i = 0; i < n; ++i) model.grads()[i] *= clip;
    for (const ParamSpec& p : model.param_specs()) {
      const AdamWStep a{lr_at_step(step), kBeta1, kBeta2, kEps, p.weight_decay ? kWeightDecay : 0.0f, step + 1};
      adamw_update_cpu(model.params() + p.offset, model.grads() + p.offset, m.data() + p.offset,
                       v.data() + p.offset, p.numel, a);
    }
  }
  run.final_params.assign(model.params(), model.params() + n);
  run.final_m = m;
  run.final_v = v;
  return run;
}

// The same training with the Zero3Engine as the model's ParameterSource; world = dp x sp.
// Rank (dp d, sp c) runs sequences [d B/dp, (d+1) B/dp) one per micro-batch, positions
// [c T/sp, (c+1) T/sp).
// `keep`, when given, receives the engine afterwards.
Run zero3_run(const GptShape& s, ProcessGroups& g, const Zero3Options& options,
              std::unique_ptr<Zero3Engine>* keep = nullptr) {
  auto engine = std::make_unique<Zero3Engine>(s, *g.world, options);
  engine->init_parameters(kSeed);
  std::unique_ptr<SequenceAttention<float>> ring;
  if (g.sp_size > 1)
    ring = std::make_unique<RingDilatedAttention<float>>(dense_as_dilated(s.seq_len, true), s.seq_len,
                                                         *g.sequence_parallel);
  Gpt<float> model(s, 1, ring.get(), engine.get());
  const int rows = kBatch / g.dp_size, chunk = s.seq_len / g.sp_size, pos0 = g.sp_rank * chunk;
  const double token_weight = 1.0 / (kBatch * s.seq_len);
  std::vector<int32_t> tokens, targets;
  Run run;
  for (int step = 0; step < kSteps; ++step) {
    global_batch(s, step, tokens, targets);
    engine->zero_gradients();
    double loss = 0;
    for (int r = g.dp_rank * rows; r < (g.dp_rank + 1) * rows; ++r) {
      const int64_t first = static_cast<int64_t>(r) * s.seq_len + pos0;
      loss += model.forward(tokens.data() + first, targets.data() + first, 1, chunk, pos0);
      model.backward(token_weight);
    }
    g.world->all_reduce(&loss, 1, DType::f64, ReduceOp::sum);
    run.losses.push_back(loss * token_weight);
    const float clip = clip_coefficient(std::sqrt(engine->gradient_sum_of_squares()), kMaxNorm);
    if (clip < 1.0f) engine->scale_gradients(clip);
    engine->adamw_step(lr_at_step(step), kBeta1, kBeta2, kEps, kWeightDecay, step + 1);
  }
  engine->read_owned("params", run.final_params);
  engine->read_owned("adam_m", run.final_m);
  engine->read_owned("adam_v", run.final_v);
  if (keep) *keep = std::move(engine);
  return run;
}

// The full logical vector on every rank: each rank places its owned values, the rest stay 0,
// and a sum over ranks is exact because every element is owned exactly once.
std::vector<float> assemble(Communicator& world, const std::vector<float>& owned,
                            const std::vector<Zero3Engine::Slice>& slices, int64_t n) {
  std::vector<float> full(static_cast<size_t>(n), 0.0f);
  size_t next = 0;
  for (const auto& sl : slices) {
    std::copy_n(owned.begin() + static_cast<int64_t>(next), sl.length, full.begin() + sl.logical_begin);
    next += static_cast<size_t>(sl.length);
  }
  REQUIRE(next == owned.size());
  world.all_reduce(full.data(), n, DType::f32, ReduceOp::sum);
  return full;
}

// Relative error of the weight vector, ||got - want|| / ||want|| <= 1e-6 (the bound).
// Runs differ only in the order of fp32 sums (batch split into micro-batches and ranks,
// reduce-scatter), which is ~1e-7 relative per gradient; per element the bound is looser:
// AdamW divides each update by that element's own gradient RMS, so an element whose gradient
// nearly cancels (e.g. the key bias, to which softmax is blind up to rotary) gets an update whose
// relative error is that of the cancelling sum, up to ~1e-3 (seen: 4.6e-6 absolute on -2.8e-3).
void check_close(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  CAPTURE(std::string(what));
  REQUIRE(got.size() == want.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  CHECK(norm > 0);
  CHECK(std::sqrt(diff) <= 1e-6 * std::sqrt(norm));
}

Zero3Options options_with(int64_t persistence_threshold, int prefetch_depth) {
  Zero3Options o;
  o.persistence_threshold = persistence_threshold;
  o.prefetch_depth = prefetch_depth;
  return o;
}

ProcessGroups groups_with_sp(int sp) { return make_process_groups(mpi_world_communicator(), sp); }

void check_parity(int sp, const Zero3Options& options) {
  const GptShape s = tiny_shape();
  static const Run reference = reference_run(tiny_shape());
  ProcessGroups g = groups_with_sp(sp);
  std::unique_ptr<Zero3Engine> engine;
  const Run run = zero3_run(s, g, options, &engine);
  REQUIRE(run.losses.size() == reference.losses.size());
  for (int step = 0; step < kSteps; ++step) {
    CAPTURE(step);
    CHECK(std::abs(run.losses[step] - reference.losses[step]) <= 1e-6 * std::abs(reference.losses[step]));
  }
  // Training moved the weights, so equal weights are not equal initial values.
  CHECK(std::abs(reference.losses.back() - reference.losses.front()) > 1e-3);
  const auto slices = engine->owned_logical_slices();
  const int64_t n = gpt_num_params(s);
  check_close(assemble(*g.world, run.final_params, slices, n), reference.final_params, "params");
  check_close(assemble(*g.world, run.final_m, slices, n), reference.final_m, "adam_m");
  // Together the ranks own every element exactly once.
  int32_t owned = 0;
  for (const auto& sl : slices) owned += static_cast<int32_t>(sl.length);
  g.world->all_reduce(&owned, 1, DType::i32, ReduceOp::sum);
  CHECK(owned == gpt_num_params(s));
}

}  // namespace

TEST_CASE("ZeRO-3 data parallel matches one unpartitioned rank over 20 steps") {
  for (int64_t threshold : {int64_t{0}, int64_t{300}}) {
    for (int depth : {0, 1, 2}) {
      CAPTURE(threshold);
      CAPTURE(depth);
      check_parity(1, options_with(threshold, depth));
    }
  }
}

TEST_CASE("ZeRO-3 with sequence parallelism (ring attention, SP = 2) matches one unpartitioned rank") {
  auto world = mpi_world_communicator();
  if (world->size() % 2 != 0) return;
  for (int64_t threshold : {int64_t{0}, int64_t{300}}) {
    for (int depth : {0, 2}) {
      CAPTURE(threshold);
      CAPTURE(depth);
      check_parity(2, options_with(threshold, depth));
    }
  }
}

TEST_CASE("cpu and nvme tiers give bitwise the results of the device tier") {
  const GptShape s = tiny_shape();
  const char* tmp = std::getenv("TEST_TMPDIR");
  REQUIRE(tmp != nullptr);
  ProcessGroups g = groups_with_sp(1);
  const Zero3Options device = options_with(300, 1);
  const Run want = zero3_run(s, g, device);
  for (StorageTier tier : {StorageTier::cpu, StorageTier::nvme}) {
    for (bool params_too : {false, true}) {
      CAPTURE(storage_tier_name(tier));
      CAPTURE(params_too);
      Zero3Options o = device;
      o.optimizer_tier = tier;
      if (params_too) o.params_tier = tier;
      o.nvme.directory = std::string(tmp) + "/swap_rank" + std::to_string(g.world->rank());
      o.nvme.block_bytes = 4096;
      std::unique_ptr<Zero3Engine> engine;
      const Run got = zero3_run(s, g, o, &engine);
      CHECK(std::memcmp(got.losses.data(), want.losses.data(), want.losses.size() * sizeof(double)) == 0);
      for (auto [a, b] : {std::pair{&got.final_params, &want.final_params}, std::pair{&got.final_m, &want.final_m},
                          std::pair{&got.final_v, &want.final_v}}) {
        REQUIRE(a->size() == b->size());
        CHECK(std::memcmp(a->data(), b->data(), a->size() * sizeof(float)) == 0);
      }
      const Zero3Engine::MemoryReport mem = engine->memory();
      CHECK(mem.optimizer_tier == tier);
      if (tier == StorageTier::nvme) CHECK(mem.disk_bytes >= mem.optimizer_bytes);
      else CHECK(mem.disk_bytes == 0);
    }
  }
}

TEST_CASE("each rank holds about 1/world of parameters, gradients and optimizer state") {
  const GptShape s = tiny_shape();
  ProcessGroups g = groups_with_sp(1);
  const int64_t W = g.world->size();
  for (int64_t threshold : {int64_t{0}, int64_t{300}}) {
    for (int depth : {0, 2}) {
      CAPTURE(threshold);
      CAPTURE(depth);
      Zero3Engine engine(s, *g.world, options_with(threshold, depth));
      engine.init_parameters(kSeed);
      // The formula of docs/zero.md, from the parameter table alone.
      std::vector<int64_t> numel(static_cast<size_t>(s.n_layers) + 2, 0);
      for (const ParamSpec& p : gpt_param_specs(s)) numel[p.group] += p.numel;
      int64_t local = 0, replicated = 0, largest_bucket = 0;
      for (int64_t n : numel) {
        const bool rep = n < threshold;
        local += rep ? n : (n + W - 1) / W;
        replicated += rep ? n : 0;
        largest_bucket = std::max(largest_bucket, rep ? n : (n + W - 1) / W * W);
      }
      const Zero3Engine::MemoryReport mem = engine.memory();
      CHECK(mem.param_shard_bytes == 4 * local);
      CHECK(mem.gradient_shard_bytes == 4 * local);
      CHECK(mem.optimizer_bytes == 8 * local);
      CHECK(mem.replicated_bytes == 16 * replicated);
      CHECK(mem.disk_bytes == 0);
      // About 1/W: at most one padding element per group beyond the replicated part.
      CHECK(local <= (gpt_num_params(s) - replicated) / W + static_cast<int64_t>(numel.size()) + replicated);
      for (int g2 = 0; g2 < engine.num_groups(); ++g2) CHECK(engine.replicated(g2) == (numel[g2] < threshold));

      // One training pass: backward holds group 0's parameters and gradients, the current
      // group's parameters and gradients, and up to `depth` prefetched groups.
      Gpt<float> model(s, 1, nullptr, &engine);
      std::vector<int32_t> tokens, targets;
      global_batch(s, 0, tokens, targets);
      engine.zero_gradients();
      model.forward(tokens.data(), targets.data(), 1, s.seq_len);
      model.backward(1.0);
      const int64_t peak = engine.memory().gathered_peak_bytes;
      CHECK(peak >= 4 * 4 * largest_bucket);
      CHECK(peak <= (depth + 4) * 4 * largest_bucket);
    }
  }
}

TEST_CASE("residency transitions are checked") {
  ResidencyState r;
  CHECK_THROWS_AS(r.complete(3), Error);
  CHECK_THROWS_AS(r.free(3), Error);
  r.start(3);
  CHECK(r.get() == Residency::in_flight);
  CHECK_THROWS_AS(r.start(3), Error);
  CHECK_THROWS_AS(r.free(3), Error);
  r.complete(3);
  CHECK(r.get() == Residency::available);
  CHECK_THROWS_AS(r.start(3), Error);
  CHECK_THROWS_AS(r.complete(3), Error);
  r.free(3);
  CHECK(r.get() == Residency::not_available);

  const GptShape s = tiny_shape();
  ProcessGroups g = groups_with_sp(1);
  Zero3Engine engine(s, *g.world, options_with(0, 1));
  engine.init_parameters(kSeed);
  CHECK(engine.residency(1) == Residency::not_available);
  CHECK_THROWS_AS(engine.release(1), Error);  // never acquired
  CHECK_THROWS_AS(engine.gradients_done(1), Error);
  engine.will_acquire(1);
  engine.will_acquire(2);
  const float* block = engine.acquire(1);
  CHECK(engine.residency(1) == Residency::available);
  CHECK(engine.residency(2) == Residency::in_flight);  // prefetched
  CHECK_THROWS_AS(engine.acquire(1), Error);          // twice without release
  const float* next = engine.acquire(2);              // completes the prefetch
  CHECK(engine.residency(2) == Residency::available);
  // The gathered group holds the initial parameters, whoever owns them.
  const auto specs = gpt_param_specs(s);
  std::vector<float> flat(static_cast<size_t>(gpt_num_params(s)));
  gpt_init_params(s, kSeed, flat.data());
  int64_t begin1 = -1, begin2 = -1, end1 = 0;
  for (const ParamSpec& p : specs) {
    if (p.group == 1 && begin1 < 0) begin1 = p.offset;
    if (p.group == 1) end1 = p.offset + p.numel;
    if (p.group == 2 && begin2 < 0) begin2 = p.offset;
  }
  CHECK(std::memcmp(block, flat.data() + begin1, (end1 - begin1) * sizeof(float)) == 0);
  CHECK(std::memcmp(next, flat.data() + begin2, 16 * sizeof(float)) == 0);
  CHECK_THROWS_AS(engine.adamw_step(1e-3f, kBeta1, kBeta2, kEps, 0.0f, 1), Error);  // groups still held
  engine.release(1);
  engine.release(2);
  CHECK(engine.residency(1) == Residency::not_available);
  CHECK_THROWS_AS(engine.release(2), Error);
}

TEST_CASE("write_owned then read_owned round trips, and the gathered groups show what was written") {
  const GptShape s = tiny_shape();
  const char* tmp = std::getenv("TEST_TMPDIR");
  REQUIRE(tmp != nullptr);
  ProcessGroups g = groups_with_sp(1);
  for (StorageTier tier : {StorageTier::device, StorageTier::nvme}) {
    CAPTURE(storage_tier_name(tier));
    Zero3Options o = options_with(300, 1);
    o.params_tier = o.optimizer_tier = tier;
    o.nvme.directory = std::string(tmp) + "/roundtrip_rank" + std::to_string(g.world->rank());
    Zero3Engine engine(s, *g.world, o);
    engine.init_parameters(kSeed);
    // Every element gets a value naming its logical index and kind.
    for (const char* kind : {"params", "adam_m", "adam_v"}) {
      std::vector<float> values;
      for (const auto& sl : engine.owned_logical_slices())
        for (int64_t i = sl.logical_begin; i < sl.logical_begin + sl.length; ++i)
          values.push_back(static_cast<float>(i) + (kind[0] == 'p' ? 0.25f : kind[5] == 'm' ? 0.5f : 0.75f));
      engine.write_owned(kind, values);
      std::vector<float> back(values.size() + 1, std::nanf(""));
      engine.read_owned(kind, back);
      CHECK(back == values);
    }
    // Replicated groups came from rank 0, partitioned ones from their owners: whole groups agree.
    const auto specs = gpt_param_specs(s);
    for (int group = 0; group < engine.num_groups(); ++group) {
      int64_t begin = -1, end = 0;
      for (const ParamSpec& p : specs)
        if (p.group == group) {
          if (begin < 0) begin = p.offset;
          end = p.offset + p.numel;
        }
      const float* full = engine.acquire(group);
      bool equal = true;
      for (int64_t i = begin; i < end; ++i) equal = equal && full[i - begin] == static_cast<float>(i) + 0.25f;
      CHECK(equal);
      engine.release(group);
    }
  }
}
