// One process (a world of one rank): damaged checkpoints are refused naming the damaged file
// and find_latest_checkpoint falls back past them with a warning; slices that leave a gap or
// overlap are refused with nothing left behind; pruning, rewriting a step, stale temporary
// directories; the consolidated export read back by safetensors_parse and by the independent
// stdlib reader scripts/read_safetensors.py.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "comm/mpi_communicator.h"
#include "core/check.h"
#include "trainer/safetensors.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/sharded_checkpoint_fixture.h"

namespace fs = std::filesystem;
using namespace dilatron;
using namespace dilatron::testing;

namespace {

const nlohmann::json kModel = {{"n_layers", 1}, {"d_model", 8}, {"n_heads", 2}, {"vocab_size", 37}, {"seq_len", 16}};

std::string fresh_run_dir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp ? tmp : "/tmp") + "/" + name;
  fs::remove_all(dir);
  return dir;
}

std::string step_dir(const std::string& run_dir, int64_t step) {
  return fmt::format("{}/checkpoints/step_{:08d}", run_dir, step);
}

// Writes step `step` with the values of `seed` from a world of one rank sliced as `sliced_as` ranks would be.
std::string save(const std::string& run_dir, int64_t step, int keep = 10, uint64_t seed = 0) {
  auto world = mpi_world_communicator();
  std::vector<OwnedSlice> slices;
  std::vector<RankState> states;
  for (int r = 0; r < 3; ++r) {
    states.push_back(synthetic_rank_state(seed ? seed : static_cast<uint64_t>(step), 3, r));
    slices.insert(slices.end(), states.back().slices.begin(), states.back().slices.end());
  }
  return write_sharded_checkpoint(*world, run_dir, step, synthetic_table(), slices,
                                  {{"model", kModel}, {"step", step}}, keep);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

void flip_byte(const std::string& path, size_t at) {
  std::string bytes = read_text(path);
  REQUIRE(at < bytes.size());
  bytes[at] = static_cast<char>(bytes[at] ^ 0x40);
  write_text(path, bytes);
}

// spdlog's output while alive.
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~CapturedLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::find(sinks.begin(), sinks.end(), sink_));
  }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

std::string input_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

bool has_temp_entries(const std::string& run_dir) {
  for (const auto& entry : fs::directory_iterator(run_dir + "/checkpoints"))
    if (entry.path().filename().string().starts_with(".tmp")) return true;
  return false;
}

}  // namespace

TEST_CASE("a damaged checkpoint is refused naming the file, and the previous one is found") {
  const std::string shard = "shard_00000.safetensors";
  struct Damage {
    const char* what;
    const char* file;  // named in the error
    std::function<void(const std::string& dir)> apply;
  };
  const std::vector<Damage> damages = {
      {"a flipped data byte", "shard_00000.safetensors",
       [&](const std::string& dir) { flip_byte(dir + "/" + shard, fs::file_size(dir + "/" + shard) - 3); }},
      {"a flipped header byte", "shard_00000.safetensors", [&](const std::string& dir) { flip_byte(dir + "/" + shard, 20); }},
      {"a truncated shard", "shard_00000.safetensors",
       [&](const std::string& dir) { fs::resize_file(dir + "/" + shard, fs::file_size(dir + "/" + shard) - 4); }},
      {"a deleted shard", "shard_00000.safetensors", [&](const std::string& dir) { fs::remove(dir + "/" + shard); }},
      {"a garbled manifest", "manifest.json", [](const std::string& dir) { write_text(dir + "/manifest.json", "{\"step\": 2,"); }},
      {"a deleted manifest", "manifest.json", [](const std::string& dir) { fs::remove(dir + "/manifest.json"); }},
      {"an edited manifest", "manifest.json",
       [](const std::string& dir) {
         std::string text = read_text(dir + "/manifest.json");
         const size_t at = text.find("\"length\": ");
         REQUIRE(at != std::string::npos);
         text.insert(at + 10, "1");
         write_text(dir + "/manifest.json", text);
       }},
  };
  for (const Damage& damage : damages) {
    CAPTURE(damage.what);
    const std::string run_dir = fresh_run_dir("damaged");
    save(run_dir, 1);
    save(run_dir, 2);
    CHECK(find_latest_checkpoint(run_dir) == step_dir(run_dir, 2));
    damage.apply(step_dir(run_dir, 2));

    const std::string error = input_error_of([&] { ShardedCheckpoint::open(step_dir(run_dir, 2)); });
    CHECK_MESSAGE(error.find(step_dir(run_dir, 2) + "/" + damage.file) != std::string::npos, error);
    CapturedLog log;
    CHECK(find_latest_checkpoint(run_dir) == step_dir(run_dir, 1));
    CHECK(log.text().find("skipping checkpoint " + step_dir(run_dir, 2)) != std::string::npos);
  }
}

TEST_CASE("`latest` that is stale, dangling, garbled or missing does not hide the newest valid checkpoint") {
  const std::string run_dir = fresh_run_dir("latest");
  const std::string latest = run_dir + "/checkpoints/latest";
  CHECK(find_latest_checkpoint(run_dir) == std::nullopt);
  for (int64_t step : {1, 2, 3}) save(run_dir, step);
  CHECK(read_text(latest) == "step_00000003\n");
  CHECK(find_latest_checkpoint(run_dir) == step_dir(run_dir, 3));

  for (const std::string text : {"step_00000002\n", "step_00000009\n", "../../etc\n", "garbage"}) {
    CAPTURE(text);
    write_text(latest, text);
    CapturedLog log;
    CHECK(find_latest_checkpoint(run_dir) == step_dir(run_dir, 3));
    CHECK(log.text().find(latest) != std::string::npos);
  }
  fs::remove(latest);
  CHECK(find_latest_checkpoint(run_dir) == step_dir(run_dir, 3));

  // `latest` names a damaged checkpoint: the next older valid one.
  write_text(latest, "step_00000003\n");
  fs::remove(step_dir(run_dir, 3) + "/shard_00000.safetensors");
  CHECK(find_latest_checkpoint(run_dir) == step_dir(run_dir, 2));
  for (int64_t step : {1, 2}) fs::remove(step_dir(run_dir, step) + "/manifest.json");
  CHECK(find_latest_checkpoint(run_dir) == std::nullopt);
}

TEST_CASE("slices with a gap or an overlap are refused and leave no checkpoint behind") {
  const std::string run_dir = fresh_run_dir("coverage");
  save(run_dir, 1);
  auto world = mpi_world_communicator();
  const auto table = synthetic_table();
  const int64_t total = synthetic_numel();
  std::vector<float> values(static_cast<size_t>(total) + 1, 0.5f);
  struct Case {
    const char* what;
    std::vector<OwnedSlice> slices;
  };
  const std::vector<Case> cases = {
      {"gap", {{"params", 0, 100, values.data()}, {"params", 101, total - 101, values.data()}}},
      {"overlap", {{"params", 0, 101, values.data()}, {"params", 100, total - 100, values.data()}}},
      {"short", {{"params", 0, total - 1, values.data()}}},
      {"one kind complete, another not", {{"params", 0, total, values.data()}, {"adam_m", 1, total - 1, values.data()}}},
      {"past the end", {{"params", 0, total + 1, values.data()}}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    CHECK_THROWS_AS(write_sharded_checkpoint(*world, run_dir, 2, table, c.slices, {}, 10), Error);
    CHECK_FALSE(fs::exists(step_dir(run_dir, 2)));
    CHECK_FALSE(has_temp_entries(run_dir));
    CHECK(read_text(run_dir + "/checkpoints/latest") == "step_00000001\n");
  }
}

TEST_CASE("pruning keeps the `keep` newest valid checkpoints and nothing older") {
  const std::string run_dir = fresh_run_dir("prune");
  for (int64_t step : {1, 2, 3}) save(run_dir, step, 2);
  CHECK_FALSE(fs::exists(step_dir(run_dir, 1)));
  CHECK(fs::exists(step_dir(run_dir, 2)));
  // A damaged step 3 does not count: step 2 stays with step 4 as the second valid one, and
  // step 3, newer than it, stays too.
  fs::remove(step_dir(run_dir, 3) + "/shard_00000.safetensors");
  save(run_dir, 4, 2);
  CHECK(fs::exists(step_dir(run_dir, 2)));
  CHECK(fs::exists(step_dir(run_dir, 3)));
  save(run_dir, 5, 2);
  CHECK_FALSE(fs::exists(step_dir(run_dir, 2)));
  CHECK_FALSE(fs::exists(step_dir(run_dir, 3)));
  CHECK(fs::exists(step_dir(run_dir, 4)));
  CHECK(find_latest_checkpoint(run_dir) == step_dir(run_dir, 5));
}

TEST_CASE("rewriting a step replaces it; stale temporary directories are removed") {
  const std::string run_dir = fresh_run_dir("rewrite");
  save(run_dir, 1, 10, 100);
  fs::create_directories(run_dir + "/checkpoints/.tmp-step_00000007");
  write_text(run_dir + "/checkpoints/.tmp-step_00000007/shard_00000.safetensors", "partial");
  save(run_dir, 1, 10, 200);
  CHECK_FALSE(has_temp_entries(run_dir));
  const auto checkpoint = ShardedCheckpoint::open(step_dir(run_dir, 1));
  for (const std::string& kind : kKinds) CHECK(count_wrong(checkpoint, 200, kind, 0, synthetic_numel()) == 0);
}

TEST_CASE("a shard is a safetensors file of one F32 tensor per slice") {
  const std::string run_dir = fresh_run_dir("shard-format");
  save(run_dir, 4);
  const std::string path = step_dir(run_dir, 4) + "/shard_00000.safetensors";
  const auto tensors = safetensors_parse(read_text(path), path);
  size_t expected = 0;
  for (const std::string& kind : kKinds) {
    for (int r = 0; r < 3; ++r) expected += owned_ranges(kind, 3, r).size();
  }
  CHECK(tensors.size() == expected);
  int64_t wrong = 0;
  for (const NamedTensor& t : tensors) {
    const size_t slash = t.name.rfind('/');
    const std::string kind = t.name.substr(0, slash);
    const int64_t begin = std::stoll(t.name.substr(slash + 1));
    REQUIRE(t.tensor.dtype() == DType::f32);
    for (int64_t i = 0; i < t.tensor.numel(); ++i) wrong += t.tensor.data<float>()[i] != synthetic_value(4, kind, begin + i);
  }
  CHECK(wrong == 0);
}

TEST_CASE("the export holds every tensor by name and shape, read back by safetensors_parse and a stdlib reader") {
  const std::string run_dir = fresh_run_dir("export");
  const auto checkpoint = ShardedCheckpoint::open(save(run_dir, 7));
  const std::string out_dir = run_dir + "/export";
  fs::create_directories(out_dir);
  const std::string out = out_dir + "/model.safetensors";
  export_safetensors(checkpoint, out);
  CHECK(std::distance(fs::directory_iterator(out_dir), fs::directory_iterator()) == 2);  // no temporaries left
  CHECK(nlohmann::json::parse(read_text(out_dir + "/config.json")) == kModel);

  const auto table = synthetic_table();
  std::map<std::string, std::string> metadata;
  const auto tensors = safetensors_parse(read_text(out), out, &metadata);
  CHECK(metadata["format"] == "dilatron");
  REQUIRE(tensors.size() == table.size());
  int64_t wrong = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    CHECK(tensors[i].name == table[i].name);
    CHECK(tensors[i].tensor.shape() == table[i].shape);
    REQUIRE(tensors[i].tensor.dtype() == DType::f32);
    for (int64_t j = 0; j < table[i].numel; ++j)
      wrong += tensors[i].tensor.data<float>()[j] != synthetic_value(7, "params", table[i].logical_offset + j);
  }
  CHECK(wrong == 0);

  const std::string json_out = run_dir + "/export.json";
  REQUIRE(std::system(("python3 scripts/read_safetensors.py " + out + " > " + json_out).c_str()) == 0);
  const auto parsed = nlohmann::json::parse(read_text(json_out));
  CHECK(parsed["metadata"]["format"] == "dilatron");
  REQUIRE(parsed["tensors"].size() == table.size());
  wrong = 0;
  for (const CheckpointTensor& t : table) {
    const auto& entry = parsed["tensors"][t.name];
    CHECK(entry["dtype"] == "F32");
    CHECK(entry["shape"].get<std::vector<int64_t>>() == t.shape);
    const auto values = entry["values"].get<std::vector<double>>();
    REQUIRE(static_cast<int64_t>(values.size()) == t.numel);
    for (int64_t j = 0; j < t.numel; ++j)
      wrong += static_cast<float>(values[static_cast<size_t>(j)]) != synthetic_value(7, "params", t.logical_offset + j);
  }
  CHECK(wrong == 0);
}

TEST_CASE("export needs params and a model section") {
  const std::string run_dir = fresh_run_dir("export-missing");
  auto world = mpi_world_communicator();
  const int64_t total = synthetic_numel();
  std::vector<float> values(static_cast<size_t>(total), 1.0f);
  const std::vector<OwnedSlice> only_params = {{"params", 0, total, values.data()}};
  const std::vector<OwnedSlice> only_adam = {{"adam_m", 0, total, values.data()}};
  const auto no_model = ShardedCheckpoint::open(
      write_sharded_checkpoint(*world, run_dir, 1, synthetic_table(), only_params, {{"step", 1}}, 10));
  CHECK_THROWS_AS(export_safetensors(no_model, run_dir + "/a.safetensors"), InputError);
  const auto no_params = ShardedCheckpoint::open(
      write_sharded_checkpoint(*world, run_dir, 2, synthetic_table(), only_adam, {{"model", kModel}}, 10));
  CHECK_THROWS_AS(export_safetensors(no_params, run_dir + "/b.safetensors"), InputError);
}
