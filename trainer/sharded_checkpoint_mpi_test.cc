// The collective write on 1, 2 and 4 ranks: every rank writes its uneven slices of three kinds,
// then every rank opens the checkpoint and reads random ranges, and the slicings of other world
// sizes, comparing each element with the formula that generated it. Three saves with keep = 2
// leave the two newest, and `latest` names the newest.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "comm/mpi_communicator.h"
#include "core/check.h"
#include "core/rng.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/sharded_checkpoint_fixture.h"

namespace fs = std::filesystem;
using namespace dilatron;
using namespace dilatron::testing;

namespace {

nlohmann::json metadata_of(int64_t step) {
  return {{"model", {{"n_layers", 1}, {"d_model", 8}}}, {"trainer", {{"step", step}, {"lr", 3e-4}}}};
}

}  // namespace

TEST_CASE("every rank's slices come back under any slicing, and keep = 2 prunes") {
  auto world = mpi_world_communicator();
  const int size = world->size(), rank = world->rank();
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string run_dir = fmt::format("{}/sharded-np{}", tmp ? tmp : "/tmp", size);
  if (rank == 0) fs::remove_all(run_dir);
  world->barrier();

  const auto table = synthetic_table();
  const int64_t total = synthetic_numel();
  for (int64_t step : {10, 20, 30}) {
    RankState state = synthetic_rank_state(static_cast<uint64_t>(step), size, rank);
    const std::string dir = write_sharded_checkpoint(*world, run_dir, step, table, state.slices, metadata_of(step), 2);
    CHECK(dir == fmt::format("{}/checkpoints/step_{:08d}", run_dir, step));
  }

  // Complete on every rank as soon as the write returns.
  std::ifstream latest(run_dir + "/checkpoints/latest");
  std::stringstream latest_text;
  latest_text << latest.rdbuf();
  CHECK(latest_text.str() == "step_00000030\n");
  CHECK_FALSE(fs::exists(run_dir + "/checkpoints/step_00000010"));
  CHECK(fs::exists(run_dir + "/checkpoints/step_00000020"));
  CHECK(find_latest_checkpoint(run_dir) == run_dir + "/checkpoints/step_00000030");

  for (int64_t step : {20, 30}) {
    const auto checkpoint = ShardedCheckpoint::open(fmt::format("{}/checkpoints/step_{:08d}", run_dir, step));
    const uint64_t seed = static_cast<uint64_t>(step);
    CHECK(checkpoint.step() == step);
    CHECK(checkpoint.world_size() == size);
    CHECK(checkpoint.metadata() == metadata_of(step));
    REQUIRE(checkpoint.tensors().size() == table.size());
    for (size_t i = 0; i < table.size(); ++i) {
      CHECK(checkpoint.tensors()[i].name == table[i].name);
      CHECK(checkpoint.tensors()[i].shape == table[i].shape);
      CHECK(checkpoint.tensors()[i].logical_offset == table[i].logical_offset);
    }
    CHECK_FALSE(checkpoint.has_kind("grads"));

    int64_t wrong = 0;
    CounterRng rng(static_cast<uint64_t>(rank), seed);
    for (const std::string& kind : kKinds) {
      REQUIRE(checkpoint.has_kind(kind));
      wrong += count_wrong(checkpoint, seed, kind, 0, total);
      for (int i = 0; i < 40; ++i) {
        const int64_t begin = static_cast<int64_t>(rng.below(static_cast<uint64_t>(total)));
        const int64_t length = static_cast<int64_t>(rng.below(static_cast<uint64_t>(total - begin + 1)));
        wrong += count_wrong(checkpoint, seed, kind, begin, length);
      }
      // What the ranks of other world sizes would load.
      for (int other : {1, 3, 5, 8}) {
        for (int r = 0; r < other; ++r) {
          for (const auto& [begin, end] : owned_ranges(kind, other, r)) wrong += count_wrong(checkpoint, seed, kind, begin, end - begin);
        }
      }
    }
    CHECK(wrong == 0);
    float x;
    CHECK_THROWS_AS(checkpoint.read("grads", 0, 1, &x), InputError);
    CHECK_THROWS_AS(checkpoint.read("params", total, 1, &x), InputError);
  }
  world->barrier();
}
