#include "trainer/checkpoint_files.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/rng.h"

using namespace dilatron;
namespace fs = std::filesystem;

namespace {

// A fresh run directory per test case.
std::string fresh_run_dir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp ? tmp : "/tmp") + "/" + name;
  fs::remove_all(dir);
  return dir;
}

std::vector<NamedTensor> random_tensors(uint64_t seed) {
  Tensor w = Tensor::empty({16, 8}, DType::f32);
  Tensor m = Tensor::empty({5}, DType::bf16);
  Tensor n = Tensor::empty({2, 3}, DType::f64);
  CounterRng rng(seed, 3);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = static_cast<float>(rng.normal());
  for (int64_t i = 0; i < m.numel(); ++i) m.data<bf16>()[i] = bf16::from_float(static_cast<float>(rng.normal()));
  for (int64_t i = 0; i < n.numel(); ++i) n.data<double>()[i] = rng.normal();
  return {{"wte", w}, {"adam.m", m}, {"x", n}};
}

nlohmann::json some_state(int64_t step) {
  return {{"rng_offset", step * 7}, {"lr", 3e-4}, {"config", {{"name", "tiny"}, {"layers", 2}}}};
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
}

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void check_corrupt(const std::string& dir, const std::string& phrase) {
  try {
    read_checkpoint(dir);
    FAIL("read_checkpoint accepted a corrupt checkpoint, expected: " << phrase);
  } catch (const InputError& e) {
    std::string message = e.what();
    CHECK_MESSAGE(message.find(dir) != std::string::npos, message);
    CHECK_MESSAGE(message.find(phrase) != std::string::npos, message);
  }
}

}  // namespace

TEST_CASE("write then read returns the tensors and state") {
  const std::string run = fresh_run_dir("roundtrip");
  auto tensors = random_tensors(1);
  const std::string dir = write_checkpoint(run, 120, tensors, some_state(120), 3);
  CHECK(dir == run + "/checkpoints/step_00000120");
  CHECK(listing(dir) == std::vector<std::string>{"model.safetensors", "state.json"});
  CHECK(listing(run + "/checkpoints") == std::vector<std::string>{"step_00000120"});

  LoadedCheckpoint loaded = read_checkpoint(dir);
  CHECK(loaded.dir == dir);
  CHECK(loaded.step == 120);
  nlohmann::json expected = some_state(120);
  expected["step"] = 120;
  CHECK(loaded.state == expected);
  REQUIRE(loaded.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    CHECK(loaded.tensors[i].name == tensors[i].name);
    CHECK(loaded.tensors[i].tensor.shape() == tensors[i].tensor.shape());
    CHECK(std::memcmp(loaded.tensors[i].tensor.raw(), tensors[i].tensor.raw(), tensors[i].tensor.nbytes()) == 0);
  }
  // The checkpoint is a plain safetensors file.
  CHECK(safetensors_parse(read_file(dir + "/model.safetensors"), "m").size() == 3);
  CHECK(find_latest_checkpoint(run) == dir);

  // Rewriting the same step replaces it.
  auto other = random_tensors(2);
  CHECK(write_checkpoint(run, 120, other, some_state(5), 3) == dir);
  loaded = read_checkpoint(dir);
  CHECK(loaded.state["rng_offset"] == 35);
  CHECK(std::memcmp(loaded.tensors[0].tensor.raw(), other[0].tensor.raw(), other[0].tensor.nbytes()) == 0);
  CHECK(listing(run + "/checkpoints") == std::vector<std::string>{"step_00000120"});
}

TEST_CASE("keep=2 removes the oldest checkpoints") {
  const std::string run = fresh_run_dir("prune");
  for (int64_t step : {10, 20, 30, 40}) write_checkpoint(run, step, random_tensors(step), some_state(step), 2);
  CHECK(listing(run + "/checkpoints") == std::vector<std::string>{"step_00000030", "step_00000040"});

  // A resumed run writing an older step keeps that one and the newest other.
  write_checkpoint(run, 35, random_tensors(35), some_state(35), 2);
  CHECK(listing(run + "/checkpoints") == std::vector<std::string>{"step_00000035", "step_00000040"});
  write_checkpoint(run, 50, random_tensors(50), some_state(50), 1);
  CHECK(listing(run + "/checkpoints") == std::vector<std::string>{"step_00000050"});
}

TEST_CASE("find_latest skips corrupt and incomplete newer checkpoints; stale temp dirs are removed") {
  const std::string run = fresh_run_dir("latest");
  const std::string checkpoints = run + "/checkpoints";
  for (int64_t step : {1, 2, 3, 4, 5}) write_checkpoint(run, step, random_tensors(step), some_state(step), 10);
  CHECK(find_latest_checkpoint(run) == checkpoints + "/step_00000005");

  // A crashed writer's temporary directory, with a newer step: never chosen. (pid 999999999
  // is above Linux's pid_max, so that writer cannot be running.)
  const std::string stale = checkpoints + "/.tmp-step_00000009-999999999";
  fs::create_directories(stale);
  fs::copy_file(checkpoints + "/step_00000005/state.json", stale + "/state.json");
  fs::copy_file(checkpoints + "/step_00000005/model.safetensors", stale + "/model.safetensors");
  CHECK(find_latest_checkpoint(run) == checkpoints + "/step_00000005");

  // Step 5: one flipped byte in the tensor data.
  std::string model = read_file(checkpoints + "/step_00000005/model.safetensors");
  model[model.size() - 3] ^= 0x10;
  write_file(checkpoints + "/step_00000005/model.safetensors", model);
  check_corrupt(checkpoints + "/step_00000005", "model.safetensors does not match its checksum");
  CHECK(find_latest_checkpoint(run) == checkpoints + "/step_00000004");

  // Step 4: a truncated file.
  fs::resize_file(checkpoints + "/step_00000004/model.safetensors", 100);
  check_corrupt(checkpoints + "/step_00000004", "has 100 bytes");
  CHECK(find_latest_checkpoint(run) == checkpoints + "/step_00000003");

  // Step 3: no state.json.
  fs::remove(checkpoints + "/step_00000003/state.json");
  check_corrupt(checkpoints + "/step_00000003", "cannot open state.json");
  CHECK(find_latest_checkpoint(run) == checkpoints + "/step_00000002");

  // Step 2: state.json edited (still valid JSON), then state.json truncated.
  std::string state = read_file(checkpoints + "/step_00000002/state.json");
  const size_t at = state.find("\"tiny\"");
  REQUIRE(at != std::string::npos);
  state[at + 1] = 'T';
  write_file(checkpoints + "/step_00000002/state.json", state);
  check_corrupt(checkpoints + "/step_00000002", "state.json does not match its checksum");
  write_file(checkpoints + "/step_00000002/state.json", state.substr(0, state.size() / 2));
  check_corrupt(checkpoints + "/step_00000002", "not valid JSON");
  CHECK(find_latest_checkpoint(run) == checkpoints + "/step_00000001");

  fs::remove(checkpoints + "/step_00000001/model.safetensors");
  check_corrupt(checkpoints + "/step_00000001", "cannot open model.safetensors");
  CHECK(find_latest_checkpoint(run) == std::nullopt);
  CHECK(find_latest_checkpoint(fresh_run_dir("no_such_run")) == std::nullopt);

  // The next write removes the stale temporary directory but not a live writer's.
  const std::string live = checkpoints + "/.tmp-step_00000007-" + std::to_string(::getppid());
  fs::create_directories(live);
  write_checkpoint(run, 6, random_tensors(6), some_state(6), 10);
  CHECK(!fs::exists(stale));
  CHECK(fs::exists(live));
  CHECK(find_latest_checkpoint(run) == checkpoints + "/step_00000006");
}
