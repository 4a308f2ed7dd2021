// ZeRO-3 checkpoints resume on the same world size bit for bit, and on another world size
// (4 -> 2, 2 -> 4, 4 -> 1) with losses within 1e-6 relative of the uninterrupted run, because
// the checkpoint is in world-size-independent logical coordinates. Runs under mpirun -np 4;
// smaller worlds are the first ranks of it.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "trainer/config.h"
#include "trainer/metrics_reader.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/train.h"

namespace fs = std::filesystem;
using namespace dilatron;

namespace {

std::string run_dir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return std::string(tmp ? tmp : "/tmp") + "/resume-" + name;
}

Config zero_config(const std::string& dir) {
  return load_config_file("configs/test-micro.yaml",
                          {"logging.run_dir=" + dir, "logging.every=1", "logging.progress_bar=false", "sample.tokens=0",
                           "checkpoint.every=0", "schedule.max_steps=20", "schedule.warmup_steps=5",
                           "data.eval_every=10", "data.batch_size=4", "zero.stage=3"});
}

// Trains on the first `ranks` ranks of `world` (the others only wait).
void train_on(Communicator& world, int ranks, const Config& config, const TrainOptions& options) {
  auto sub = world.split(world.rank() < ranks ? 0 : 1, world.rank(), "sub");
  if (world.rank() < ranks) {
    ProcessGroups g = make_process_groups(std::move(sub), 1);
    run_training(config, options, g);
  }
  world.barrier();
}

void fresh(Communicator& world, const std::string& dir) {
  if (world.rank() == 0) fs::remove_all(dir);
  world.barrier();
}

// 10 steps on `first` ranks, then --resume auto to step 20 on `second` ranks; rank 0 compares
// steps 11..20 with the uninterrupted 4-rank run.
void check_resume(Communicator& world, int first, int second, double rtol) {
  const std::string straight = run_dir("straight"), split = run_dir(std::to_string(first) + "to" + std::to_string(second));
  if (!fs::exists(straight + "/checkpoints")) {
    fresh(world, straight);
    train_on(world, 4, zero_config(straight), {});
  }
  fresh(world, split);
  train_on(world, first, zero_config(split), {"", 10});
  train_on(world, second, zero_config(split), {"auto", std::nullopt});
  if (world.rank() != 0) return;

  auto a = read_metrics(straight), b = read_metrics(split);
  REQUIRE(b.size() == 20);
  for (int64_t s = 11; s <= 20; ++s) {
    CAPTURE(first);
    CAPTURE(second);
    CAPTURE(s);
    const double la = a[s]["loss"].get<double>(), lb = b[s]["loss"].get<double>();
    if (rtol == 0)
      CHECK(la == lb);
    else
      CHECK(std::abs(la - lb) <= rtol * std::abs(la));
  }
  if (rtol == 0) {
    auto ca = ShardedCheckpoint::open(straight + "/checkpoints/step_00000020");
    auto cb = ShardedCheckpoint::open(split + "/checkpoints/step_00000020");
    int64_t n = 0;
    for (const CheckpointTensor& t : ca.tensors()) n += t.numel;
    for (const char* kind : {"params", "adam_m", "adam_v"}) {
      std::vector<float> x(n), y(n);
      ca.read(kind, 0, n, x.data());
      cb.read(kind, 0, n, y.data());
      CAPTURE(kind);
      CHECK(std::memcmp(x.data(), y.data(), n * sizeof(float)) == 0);
    }
  }
}

}  // namespace

TEST_CASE("ZeRO-3 resume on the same 4 ranks is bit-identical") {
  auto world = mpi_world_communicator();
  REQUIRE(world->size() == 4);
  check_resume(*world, 4, 4, 0.0);
}

TEST_CASE("ZeRO-3 resume from 4 ranks onto 2, and from 2 onto 4, re-slices the shards") {
  auto world = mpi_world_communicator();
  check_resume(*world, 4, 2, 1e-6);
  check_resume(*world, 2, 4, 1e-6);
}

TEST_CASE("ZeRO-3 resume from 4 ranks onto 1") {
  auto world = mpi_world_communicator();
  check_resume(*world, 4, 1, 1e-6);
}
