// End-to-end tests of the training loop on a micro model: resume is bit-identical, the split
// of the batch into micro-batches does not change the result beyond rounding, and loss falls.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/config.h"
#include "trainer/metrics_reader.h"
#include "trainer/train.h"

namespace fs = std::filesystem;
using namespace dilatron;

namespace {

std::string fresh_dir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp ? tmp : "/tmp") + "/" + name;
  fs::remove_all(dir);
  return dir;
}

Config micro_config(const std::string& run_dir, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> overrides = {"logging.run_dir=" + run_dir, "logging.every=1",
                                        "logging.progress_bar=false", "sample.tokens=0",
                                        "checkpoint.every=0", "schedule.max_steps=20",
                                        "schedule.warmup_steps=5", "data.eval_every=5"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return load_config_file("configs/test-micro.yaml", overrides);
}

// A single-rank run inside this (singleton) MPI process.
TrainSummary train(const Config& config, const TrainOptions& options = {}) {
  ProcessGroups groups = make_process_groups(mpi_world_communicator(), 1);
  return run_training(config, options, groups);
}

}  // namespace

TEST_CASE("20 steps straight equal 10 steps, resume, 10 steps, bit for bit") {
  std::string straight = fresh_dir("straight"), split = fresh_dir("split");
  train(micro_config(straight), {});

  TrainSummary first = train(micro_config(split), {"", 10});
  CHECK(first.steps_done == 10);
  CHECK(fs::exists(split + "/checkpoints/step_00000010"));
  TrainSummary second = train(micro_config(split), {"auto", std::nullopt});
  CHECK(second.steps_done == 20);

  auto a = read_metrics(straight), b = read_metrics(split);
  REQUIRE(a.size() == 20);
  REQUIRE(b.size() == 20);
  for (int64_t s = 1; s <= 20; ++s) {
    CAPTURE(s);
    CHECK(a[s]["loss"].get<double>() == b[s]["loss"].get<double>());
    CHECK(a[s]["grad_norm"].get<double>() == b[s]["grad_norm"].get<double>());
    if (a[s].contains("val_loss")) CHECK(a[s]["val_loss"].get<double>() == b[s]["val_loss"].get<double>());
  }
  // The final weights and optimizer state agree too.
  auto wa = ShardedCheckpoint::open(straight + "/checkpoints/step_00000020");
  auto wb = ShardedCheckpoint::open(split + "/checkpoints/step_00000020");
  int64_t n = 0;
  for (const CheckpointTensor& t : wa.tensors()) n += t.numel;
  for (const char* kind : {"params", "adam_m", "adam_v"}) {
    std::vector<float> a(n), b(n);
    wa.read(kind, 0, n, a.data());
    wb.read(kind, 0, n, b.data());
    CAPTURE(kind);
    CHECK(std::memcmp(a.data(), b.data(), n * sizeof(float)) == 0);
  }
}

TEST_CASE("micro-batching changes the result only by rounding") {
  std::string whole = fresh_dir("whole"), pieces = fresh_dir("pieces");
  train(micro_config(whole, {"data.batch_size=4", "data.micro_batch_size=0"}), {});
  train(micro_config(pieces, {"data.batch_size=4", "data.micro_batch_size=1"}), {});
  auto a = read_metrics(whole), b = read_metrics(pieces);
  for (int64_t s = 1; s <= 20; ++s) {
    CAPTURE(s);
    double la = a[s]["loss"].get<double>(), lb = b[s]["loss"].get<double>();
    CHECK(std::abs(la - lb) <= 1e-5 * std::abs(la));
  }
}

TEST_CASE("training lowers the loss and logs every required field") {
  std::string dir = fresh_dir("falls");
  TrainSummary s = train(micro_config(dir, {"schedule.max_steps=40", "optimizer.lr=3e-3"}), {});
  auto rows = read_metrics(dir);
  for (const auto& [step, row] : rows)
    for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens_per_s"}) CHECK(row.contains(key));
  CHECK(rows.at(40).contains("val_loss"));
  CHECK(rows.at(40)["loss"].get<double>() < rows.at(1)["loss"].get<double>() - 0.5);
  CHECK(s.last_val_loss.has_value());
  CHECK(fs::exists(dir + "/config.yaml"));
}

TEST_CASE("a fresh run refuses a run_dir that holds checkpoints") {
  std::string dir = fresh_dir("refuse");
  train(micro_config(dir, {"schedule.max_steps=2", "schedule.warmup_steps=1"}), {});
  CHECK_THROWS_AS(train(micro_config(dir, {"schedule.max_steps=2", "schedule.warmup_steps=1"}), {}), InputError);
}

TEST_CASE("resuming with another model shape is refused, naming the key") {
  std::string dir = fresh_dir("shape");
  train(micro_config(dir, {"schedule.max_steps=2", "schedule.warmup_steps=1"}), {});
  CHECK_THROWS_WITH_AS(train(micro_config(dir, {"model.d_model=48", "schedule.max_steps=4", "schedule.warmup_steps=1"}), {"auto", {}}),
                       doctest::Contains("model.d_model"), InputError);
}

TEST_CASE("checkpoint.at_end: false ends a run without a checkpoint, periodic ones still written") {
  std::string dir = fresh_dir("no-final");
  TrainSummary s = train(micro_config(dir, {"schedule.max_steps=6", "schedule.warmup_steps=1", "checkpoint.at_end=false",
                                            "checkpoint.every=4", "sample.tokens=5"}),
                         {});
  CHECK(s.steps_done == 6);
  const auto latest = find_latest_checkpoint(dir);
  REQUIRE(latest.has_value());
  CHECK(ShardedCheckpoint::open(*latest).step() == 4);
}
