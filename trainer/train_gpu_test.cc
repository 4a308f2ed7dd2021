// Training on the GPU, end to end (needs a GPU; tags = ["gpu"]; runs under mpirun with 2 ranks,
// both on one GPU through the MPI backend, since NCCL refuses two ranks on one GPU):
// - 50 steps in bf16 on the GPU track the fp32 CPU run's losses within bf16 tolerance;
// - a GPU run stopped at step 25 and resumed gives bit-identical losses and gradient norms
//   (replicated, and ZeRO-3 in GPU memory);
// - ZeRO-3 in GPU memory on 1 rank equals the replicated state;
// - 2 ranks (data parallel, replicated or ZeRO-3 in GPU memory or with CPU offload; or sequence
//   parallel through ring dilated attention with ZeRO-3) equal 1 rank of the same kind (sequence
//   parallel: to bf16 tolerance, looser only at the steps where fp32 on the CPU shows the
//   gradient norm ill-conditioned).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "trainer/config.h"
#include "trainer/metrics_reader.h"
#include "trainer/train.h"

namespace fs = std::filesystem;
using namespace dilatron;

namespace {

constexpr int kSteps = 50;

std::string run_dir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return std::string(tmp ? tmp : "/tmp") + "/gpu-train-" + name;
}

Config gpu_config(const std::string& dir, const std::vector<std::string>& extra) {
  std::vector<std::string> overrides = {"logging.run_dir=" + dir, "logging.every=1", "logging.progress_bar=false",
                                        "sample.tokens=0", "checkpoint.every=0",
                                        "schedule.max_steps=" + std::to_string(kSteps), "schedule.warmup_steps=5",
                                        "data.eval_every=25", "data.batch_size=4", "data.micro_batch_size=2",
                                        "device=cuda", "parallel.share_gpus=true"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return load_config_file("configs/test-micro.yaml", overrides);
}

// Rank 0 alone, in a world of its own (the other rank waits at the barrier).
void train_alone(Communicator& world, const Config& config, const TrainOptions& options = {}) {
  auto solo = world.split(world.rank() == 0 ? 0 : 1, world.rank(), "solo");
  if (world.rank() == 0) {
    if (options.resume.empty()) fs::remove_all(config.logging.run_dir);
    ProcessGroups g = make_process_groups(std::move(solo), 1);
    run_training(config, options, g);
  }
  world.barrier();
}

double relative(double a, double b) { return std::abs(a - b) / std::abs(b); }

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

TEST_CASE("50 GPU steps in bf16 track the fp32 CPU run") {
  auto world = mpi_world_communicator();
  const std::string cpu = run_dir("cpu"), gpu = run_dir("bf16");
  train_alone(*world, gpu_config(cpu, {"device=cpu"}));
  train_alone(*world, gpu_config(gpu, {}));
  if (world->rank() != 0) return;
  auto a = read_metrics(cpu), b = read_metrics(gpu);
  REQUIRE(a.size() == kSteps);
  REQUIRE(b.size() == kSteps);
  double worst = 0;
  for (int64_t s = 1; s <= kSteps; ++s) {
    const double err = relative(b[s]["loss"].get<double>(), a[s]["loss"].get<double>());
    worst = std::max(worst, err);
    CAPTURE(s);
    // bf16 activations: about 3 significant digits per value, compounding slowly over steps.
    CHECK(err <= 2e-2);
  }
  std::printf("bf16 GPU vs fp32 CPU over %d steps: worst loss difference %.2e relative (loss %.4f -> %.4f)\n",
              kSteps, worst, a[1]["loss"].get<double>(), a[kSteps]["loss"].get<double>());
  CHECK(a[kSteps]["loss"].get<double>() < a[1]["loss"].get<double>() - 0.5);  // it learned: not agreement on noise
}

void check_resume(Communicator& world, const std::string& name, const std::vector<std::string>& extra) {
  const std::string whole = run_dir(name + "-whole"), parts = run_dir(name + "-parts");
  train_alone(world, gpu_config(whole, extra));
  train_alone(world, gpu_config(parts, extra), TrainOptions{"", 25});
  train_alone(world, gpu_config(parts, extra), TrainOptions{"auto", std::nullopt});
  if (world.rank() != 0) return;
  auto a = read_metrics(whole), b = read_metrics(parts);
  REQUIRE(b.size() == kSteps);
  for (int64_t s = 1; s <= kSteps; ++s) {
    CAPTURE(s);
    CHECK(a[s]["loss"].get<double>() == b[s]["loss"].get<double>());
    CHECK(a[s]["grad_norm"].get<double>() == b[s]["grad_norm"].get<double>());
    if (a[s].contains("val_loss")) CHECK(a[s]["val_loss"].get<double>() == b[s]["val_loss"].get<double>());
  }
}

TEST_CASE("a GPU run stopped and resumed is bit-identical to an uninterrupted one") {
  auto world = mpi_world_communicator();
  SUBCASE("replicated") { check_resume(*world, "replicated", {}); }
  SUBCASE("ZeRO-3 in GPU memory") { check_resume(*world, "zero3-gpu", {"zero.stage=3"}); }
}

// ZeRO-3 with its shards in GPU memory runs the same AdamW arithmetic as the replicated state, on
// slices instead of whole tensors: at 1 rank only the gradient norm's summation order differs.
TEST_CASE("ZeRO-3 in GPU memory on 1 rank equals the replicated state") {
  auto world = mpi_world_communicator();
  const std::string replicated = run_dir("replicated-1"), zero3 = run_dir("zero3-gpu-1");
  train_alone(*world, gpu_config(replicated, {}));
  train_alone(*world, gpu_config(zero3, {"zero.stage=3"}));
  if (world->rank() != 0) return;
  auto a = read_metrics(replicated), b = read_metrics(zero3);
  REQUIRE(b.size() == kSteps);
  for (int64_t s = 1; s <= kSteps; ++s) {
    CAPTURE(s);
    CHECK(relative(b[s]["loss"].get<double>(), a[s]["loss"].get<double>()) <= 1e-5);
    CHECK(relative(b[s]["grad_norm"].get<double>(), a[s]["grad_norm"].get<double>()) <= 1e-4);
  }
}

// Per step s (index s - 1), |2 ranks - 1 rank| / |1 rank| of the loss and of the gradient norm.
struct StepDifferences {
  std::vector<double> loss, grad_norm;
};

// 2 ranks on one GPU (MPI on device buffers) against rank 0 alone with the same config (the
// same optimizer: GPU AdamW replicated, CPU AdamW under ZeRO-3) and the same micro-batch shapes,
// so the only differences are fp32 summation orders. (Against each other, the GPU and CPU AdamW
// differ by fp32 roundings that flip bf16 roundings of the weights: about 1e-3 on gradient norms.)
// The differences reach rank 0 only; the others get empty vectors.
StepDifferences two_rank_differences(Communicator& world, const std::string& name,
                                     const std::vector<std::string>& extra, int sequence_parallel) {
  const std::string single = run_dir(name + "-1"), split = run_dir(name + "-2");
  train_alone(world, gpu_config(single, extra));
  if (world.rank() == 0) fs::remove_all(split);
  world.barrier();
  ProcessGroups g = make_process_groups(world.split(0, world.rank(), "world"), sequence_parallel);
  g.placement = mpi_placement();
  std::vector<std::string> overrides = extra;
  overrides.push_back("parallel.backend=mpi");
  overrides.push_back("parallel.sequence_parallel=" + std::to_string(sequence_parallel));
  run_training(gpu_config(split, overrides), {}, g);
  StepDifferences d;
  if (world.rank() != 0) return d;
  auto a = read_metrics(single), b = read_metrics(split);
  REQUIRE(a.size() == kSteps);
  REQUIRE(b.size() == kSteps);
  for (int64_t s = 1; s <= kSteps; ++s) {
    d.loss.push_back(relative(b[s]["loss"].get<double>(), a[s]["loss"].get<double>()));
    d.grad_norm.push_back(relative(b[s]["grad_norm"].get<double>(), a[s]["grad_norm"].get<double>()));
  }
  std::printf("%s: 2 ranks vs 1 rank, worst loss difference %.2e, worst gradient-norm difference %.2e relative\n",
              name.c_str(), *std::max_element(d.loss.begin(), d.loss.end()),
              *std::max_element(d.grad_norm.begin(), d.grad_norm.end()));
  return d;
}

void check_two_ranks(Communicator& world, const std::string& name, const std::vector<std::string>& extra) {
  const StepDifferences d = two_rank_differences(world, name, extra, 1);
  for (size_t i = 0; i < d.loss.size(); ++i) {
    CAPTURE(i + 1);
    CHECK(d.loss[i] <= 1e-4);
    CHECK(d.grad_norm[i] <= 1e-4);
  }
}

TEST_CASE("2 data-parallel ranks on one GPU equal 1 rank (replicated)") {
  auto world = mpi_world_communicator();
  REQUIRE(world->size() == 2);
  check_two_ranks(*world, "dp2", {});
}

TEST_CASE("2 data-parallel ranks on one GPU with ZeRO-3 in GPU memory equal 1 rank") {
  auto world = mpi_world_communicator();
  check_two_ranks(*world, "zero3-gpu-dp2", {"zero.stage=3"});
}

TEST_CASE("2 data-parallel ranks on one GPU with ZeRO-3 (cpu offload) equal 1 rank") {
  auto world = mpi_world_communicator();
  check_two_ranks(*world, "zero3-dp2", {"zero.stage=3", "zero.offload_params=cpu", "zero.offload_optimizer=cpu"});
}

// The ring adds partial attentions across ranks in another order than one rank's branch, and
// bf16 rounds the results: bf16-level agreement of every step's loss (2e-3; a wrong block or
// merge is off by 1e-1) and gradient norm (2e-2). Except that some batches make the gradient norm
// ill-conditioned. The same two runs in fp32 on the CPU show which: their gradient norms agree to
// about 1e-8 at the median step and differ 50-140 times more at those (measured: step 17, which
// is also where bf16 on the GPU differs by 2-3 %; steps 31 and 46 next, in both). At steps where
// the fp32 pair differs by more than 20 times its median, 1e-1 is allowed; such steps must stay
// rare, and the median step must agree to 1e-3, so a systematic error still fails.
TEST_CASE("2 sequence-parallel ranks on one GPU (ring dilated attention) with ZeRO-3 equal 1 rank") {
  auto world = mpi_world_communicator();
  const std::vector<std::string> ring = {"attention.kind=dilated", "attention.segment_lengths=[8,16,32]",
                                         "attention.dilation_rates=[1,2,4]", "zero.stage=3"};
  auto with = [](std::vector<std::string> extra, const std::vector<std::string>& more) {
    extra.insert(extra.end(), more.begin(), more.end());
    return extra;
  };
  const std::vector<std::string> offload = {"zero.offload_params=cpu", "zero.offload_optimizer=cpu"};
  const StepDifferences fp32 =
      two_rank_differences(*world, "sp2-zero3-cpu", with(with(ring, offload), {"device=cpu"}), 2);
  const StepDifferences offloaded = two_rank_differences(*world, "sp2-zero3", with(ring, offload), 2);
  const StepDifferences on_gpu = two_rank_differences(*world, "sp2-zero3-gpu", ring, 2);
  if (world->rank() != 0) return;
  const double fp32_median = median(fp32.grad_norm);
  std::vector<bool> ill_conditioned;
  for (double d : fp32.grad_norm) ill_conditioned.push_back(d > 20 * fp32_median);
  CHECK(std::count(ill_conditioned.begin(), ill_conditioned.end(), true) <= kSteps / 10);
  for (const StepDifferences* d : {&offloaded, &on_gpu}) {
    for (size_t i = 0; i < d->loss.size(); ++i) {
      CAPTURE(i + 1);
      CHECK(d->loss[i] <= 2e-3);
      CHECK(d->grad_norm[i] <= (ill_conditioned[i] ? 1e-1 : 2e-2));
    }
    CHECK(median(d->grad_norm) <= 1e-3);
  }
}
