#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "trainer/config.h"

using namespace dilatron;

namespace {

// The InputError message of parse_config, or "" when it accepts the input.
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, overrides);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

bool one_line(const std::string& message) { return message.find('\n') == std::string::npos; }

}  // namespace

TEST_CASE("an empty document is the default config, and the defaults are valid") {
  CHECK(parse_config("") == Config{});
  CHECK(parse_config("# nothing but a comment\n") == Config{});
}

TEST_CASE("the defaults round-trip through config_to_yaml") {
  Config defaults;
  std::string yaml = config_to_yaml(defaults);
  CHECK(parse_config(yaml) == defaults);
  // Every field is written, so the YAML documents the resolved run.
  for (const char* key : {"device: auto", "seed: 1337", "n_layers: 4", "segment_lengths: []",
                          "offload_optimizer: device", "min_lr_ratio: 0.1", "progress_bar: true",
                          // doubles always carry a '.', so YAML 1.1 readers (PyYAML) see floats too
                          "eps: 1.0e-08", "grad_clip: 1.0", "rope_theta: 10000.0"})
    CHECK_MESSAGE(yaml.find(key) != std::string::npos, key);
}

TEST_CASE("random configs round-trip exactly, awkward doubles and strings included") {
  for (uint64_t trial = 0; trial < 50; ++trial) {
    CounterRng rng(2024, trial);
    Config c;
    c.model.n_layers = 1 + static_cast<int>(rng.below(12));
    c.model.n_heads = 1 + static_cast<int>(rng.below(8));
    c.model.d_model = c.model.n_heads * 2 * (1 + static_cast<int>(rng.below(32)));
    c.model.d_ff = static_cast<int>(rng.below(1000));
    c.model.position = rng.below(2) ? PositionEncoding::learned : PositionEncoding::rotary;
    c.model.norm = rng.below(2) ? NormType::rmsnorm : NormType::layernorm;
    c.model.rope_theta = 1 + rng.uniform() * 1e6;
    c.model.init_std = rng.uniform() * 0.1 + 1e-300;
    c.model.recompute = rng.below(2);
    c.attention.kind = AttentionKind::dilated;
    c.attention.mode = rng.below(2) ? AttentionMode::head_groups : AttentionMode::longnet;
    c.attention.segment_lengths = {32, 64, 128};
    c.attention.dilation_rates = {1, 2, 1 + static_cast<int64_t>(rng.below(2))};
    c.attention.causal = rng.below(2);
    c.parallel.sequence_parallel = 1 << rng.below(4);
    c.parallel.overlap_ring = rng.below(2);
    c.zero.stage = 3;
    c.zero.offload_params = OffloadTier::nvme;
    c.zero.offload_optimizer = OffloadTier::cpu;
    c.zero.nvme_path = "/mnt/nvme 0/swap";
    c.zero.persistence_threshold = static_cast<int64_t>(rng.below(1 << 20));
    c.zero.nvme_block_bytes = 4096 * (1 + static_cast<int64_t>(rng.below(1024)));
    c.zero.nvme_queue_depth = 1 + static_cast<int>(rng.below(64));
    c.zero.host_threads = static_cast<int>(rng.below(1025));
    c.optimizer.lr = std::exp(-20 * rng.uniform());
    c.optimizer.beta1 = rng.uniform() * 0.999;
    c.optimizer.beta2 = rng.uniform() * 0.999;
    c.optimizer.eps = std::exp(-40 * rng.uniform());
    c.optimizer.weight_decay = rng.uniform();
    c.optimizer.grad_clip = rng.normal();
    c.schedule.max_steps = 1 + static_cast<int64_t>(rng.below(1ull << 40));
    c.schedule.warmup_steps = static_cast<int64_t>(rng.below(static_cast<uint64_t>(c.schedule.max_steps)));
    c.schedule.min_lr_ratio = rng.uniform();
    c.data.path = "data/with: colon # and hash.txt";
    c.data.format = DataFormat::tokens;
    c.model.vocab_size = 2 + static_cast<int>(rng.below(60000));
    c.data.val_fraction = 0.5 * (1 - rng.uniform());
    c.data.micro_batch_size = 1 + static_cast<int64_t>(rng.below(8));
    c.data.batch_size = c.data.micro_batch_size * (1 + static_cast<int64_t>(rng.below(8)));
    c.sample.prompt = "ROMEO:\n\t\"quoted\" \\ é ~ null";
    c.sample.temperature = 1e-3 + rng.uniform();
    c.logging.run_dir = "true";  // a string that YAML would read as a bool unless quoted
    c.device = DeviceKind::cuda;
    c.seed = (rng.below(1ull << 32) << 32) | rng.below(1ull << 32);

    Config back = parse_config(config_to_yaml(c));
    CHECK(back == c);
    CHECK(back.optimizer.eps == c.optimizer.eps);  // bit-exact, not merely close
  }
}

TEST_CASE("a section left empty keeps its defaults; a written key overrides only itself") {
  Config c = parse_config("model:\ndata:\n  batch_size: 4\n");
  CHECK(c.model == ModelConfig{});
  CHECK(c.data.batch_size == 4);
  CHECK(c.data.path == DataConfig{}.path);
}

TEST_CASE("parallel.overlap_ring: on by default, read both ways from a file or an override, round-trips") {
  CHECK(Config{}.parallel.overlap_ring);
  CHECK(parse_config("").parallel.overlap_ring);
  CHECK(parse_config("parallel:\n  overlap_ring: true\n").parallel.overlap_ring);
  CHECK(!parse_config("parallel:\n  overlap_ring: false\n").parallel.overlap_ring);
  CHECK(!parse_config("", {"parallel.overlap_ring=false"}).parallel.overlap_ring);
  for (bool overlap : {true, false}) {
    Config c;
    c.parallel.overlap_ring = overlap;
    const std::string yaml = config_to_yaml(c);
    CHECK(yaml.find(overlap ? "overlap_ring: true" : "overlap_ring: false") != std::string::npos);
    CHECK(parse_config(yaml) == c);
  }
  CHECK(error_of("parallel:\n  overlap_ring: maybe\n") ==
        "config: parallel.overlap_ring: expected true or false, got 'maybe'");
  CHECK(error_of("parallel:\n  overlap_rings: false\n") ==
        "config: unknown key parallel.overlap_rings (did you mean parallel.overlap_ring?)");
}

TEST_CASE("every enum spelling parses") {
  CHECK(parse_config("device: auto").device == DeviceKind::automatic);
  CHECK(parse_config("device: cpu").device == DeviceKind::cpu);
  CHECK(parse_config("device: cuda").device == DeviceKind::cuda);
  CHECK(parse_config("model: {position: learned, norm: rmsnorm}").model.position == PositionEncoding::learned);
  CHECK(parse_config("model: {norm: rmsnorm}").model.norm == NormType::rmsnorm);
  CHECK(parse_config("attention: {mode: head_groups}").attention.mode == AttentionMode::head_groups);
  CHECK(parse_config("data: {format: tokens, path: x.bin}\nmodel: {vocab_size: 50257}").data.format ==
        DataFormat::tokens);
  CHECK(parse_config("zero: {stage: 3, offload_params: cpu}").zero.offload_params == OffloadTier::cpu);
  CHECK(to_string(DeviceKind::automatic) == "auto");
  CHECK(to_string(OffloadTier::nvme) == "nvme");
}

TEST_CASE("overrides: scalars, lists, top-level keys, strings; later ones win") {
  Config c = parse_config("model:\n  n_layers: 4\n",
                          {"model.n_layers=6", "attention.kind=dilated", "attention.segment_lengths=[64, 128]",
                           "attention.dilation_rates=[1,2]", "optimizer.lr=3e-4", "seed=7", "device=cpu",
                           "logging.run_dir=runs/x=y", "data.val_path=", "sample.tokens=5", "sample.tokens=9"});
  CHECK(c.model.n_layers == 6);
  CHECK(c.attention.kind == AttentionKind::dilated);
  CHECK(c.attention.segment_lengths == std::vector<int64_t>{64, 128});
  CHECK(c.attention.dilation_rates == std::vector<int64_t>{1, 2});
  CHECK(c.optimizer.lr == 3e-4);
  CHECK(c.seed == 7);
  CHECK(c.device == DeviceKind::cpu);
  CHECK(c.logging.run_dir == "runs/x=y");
  CHECK(c.data.val_path.empty());
  CHECK(c.sample.tokens == 9);
}

TEST_CASE("overrides are validated with the file") {
  std::string e = error_of("model:\n  d_model: 128\n", {"model.n_heads=5"});
  CHECK(e == "config: model.n_heads = 5: must divide model.d_model = 128");
}

TEST_CASE("malformed overrides") {
  CHECK(error_of("", {"foo"}) == "--set: expected key.path=value, got 'foo'");
  CHECK(error_of("", {"=3"}) == "--set: expected key.path=value, got '=3'");
  CHECK(error_of("", {"model.n_layer=3"}) == "--set: unknown key model.n_layer (did you mean model.n_layers?)");
  CHECK(error_of("", {"model=3"}).find("--set: model is a section") == 0);
  CHECK(error_of("", {"model.n_layers.x=3"}).find("--set: unknown key model.n_layers.x") == 0);
  CHECK(error_of("", {"model.n_layers=four"}) == "--set model.n_layers: expected an integer, got 'four'");
  CHECK(error_of("", {"attention.segment_lengths=[1,"}).find("--set attention.segment_lengths: cannot read") == 0);
}

// Each case breaks one rule of an otherwise valid (default) config.
TEST_CASE("each validation rule names its key") {
  struct Case {
    std::vector<std::string> overrides;
    std::string expected;  // a substring of the message; it always names the key
  };
  const std::vector<Case> cases = {
      {{"model.n_layers=0"}, "model.n_layers = 0: must be >= 1"},
      {{"model.d_model=0"}, "model.d_model = 0: must be >= 1"},
      {{"model.n_heads=0"}, "model.n_heads = 0: must be >= 1"},
      {{"model.n_heads=3"}, "model.n_heads = 3: must divide model.d_model = 128"},
      {{"model.d_model=12", "model.n_heads=4"}, "model.n_heads = 4: head size"},
      {{"model.vocab_size=1", "data.format=tokens"}, "model.vocab_size = 1: must be in [2, 1048576]"},
      {{"model.vocab_size=1048577", "data.format=tokens"}, "model.vocab_size = 1048577: must be in"},
      {{"model.vocab_size=200"}, "model.vocab_size = 200: must be at least 256 when data.format = text"},
      {{"model.seq_len=1"}, "model.seq_len = 1: must be >= 2"},
      {{"model.d_ff=-1"}, "model.d_ff = -1"},
      {{"model.rope_theta=0"}, "model.rope_theta = 0"},
      {{"model.init_std=-0.1"}, "model.init_std = -0.1"},
      {{"attention.segment_lengths=[64]"}, "attention.dilation_rates has 0 entries"},
      {{"attention.kind=dilated"}, "attention.segment_lengths is empty"},
      {{"attention.segment_lengths=[0]", "attention.dilation_rates=[1]"}, "attention.segment_lengths[0] = 0"},
      {{"attention.segment_lengths=[64]", "attention.dilation_rates=[0]"}, "attention.dilation_rates[0] = 0"},
      {{"attention.segment_lengths=[32,64]", "attention.dilation_rates=[1,3]"},
       "attention.segment_lengths[1] = 64: must be divisible by attention.dilation_rates[1] = 3"},
      {{"attention.segment_lengths=[48]", "attention.dilation_rates=[1]"},
       "attention.segment_lengths[0] = 48: must divide model.seq_len = 128"},
      {{"parallel.sequence_parallel=0"}, "parallel.sequence_parallel = 0: must be >= 1"},
      {{"parallel.sequence_parallel=3"}, "parallel.sequence_parallel = 3: must divide model.seq_len = 128"},
      {{"zero.stage=2"}, "zero.stage = 2: must be 0 or 3"},
      {{"zero.offload_params=cpu"}, "zero.offload_params = cpu: needs zero.stage = 3"},
      {{"zero.offload_optimizer=nvme"}, "zero.nvme_path is empty"},
      {{"zero.stage=3", "zero.offload_params=nvme"}, "zero.nvme_path is empty"},
      {{"zero.persistence_threshold=-1"}, "zero.persistence_threshold = -1"},
      {{"zero.prefetch_depth=-1"}, "zero.prefetch_depth = -1"},
      {{"zero.nvme_block_bytes=1000"}, "zero.nvme_block_bytes = 1000"},
      {{"zero.nvme_queue_depth=0"}, "zero.nvme_queue_depth = 0"},
      {{"zero.host_threads=-1"}, "zero.host_threads = -1: must be in [0, 1024]"},
      {{"zero.host_threads=1025"}, "zero.host_threads = 1025"},
      {{"optimizer.lr=0"}, "optimizer.lr = 0: must be > 0"},
      {{"optimizer.beta1=1"}, "optimizer.beta1 = 1: must be in [0, 1)"},
      {{"optimizer.beta1=-0.1"}, "optimizer.beta1 = -0.1"},
      {{"optimizer.beta2=1.5"}, "optimizer.beta2 = 1.5"},
      {{"optimizer.eps=0"}, "optimizer.eps = 0: must be > 0"},
      {{"optimizer.weight_decay=-1e-3"}, "optimizer.weight_decay = -0.001: must be >= 0"},
      {{"schedule.max_steps=0", "schedule.warmup_steps=0"}, "schedule.max_steps = 0: must be >= 1"},
      {{"schedule.warmup_steps=1001"}, "schedule.warmup_steps = 1001: must be in [0, schedule.max_steps = 1000]"},
      {{"schedule.warmup_steps=-1"}, "schedule.warmup_steps = -1"},
      {{"schedule.min_lr_ratio=1.5"}, "schedule.min_lr_ratio = 1.5: must be in [0, 1]"},
      {{"data.path="}, "data.path is empty"},
      {{"data.val_fraction=0"}, "data.val_fraction = 0: must be in (0, 0.5]"},
      {{"data.val_fraction=0.6"}, "data.val_fraction = 0.6"},
      {{"data.batch_size=0"}, "data.batch_size = 0: must be >= 1"},
      {{"data.micro_batch_size=17"}, "data.micro_batch_size = 17: must be in [0, data.batch_size = 16]"},
      {{"data.micro_batch_size=-1"}, "data.micro_batch_size = -1"},
      {{"data.micro_batch_size=5"}, "data.micro_batch_size = 5: must divide data.batch_size = 16"},
      {{"data.eval_every=-1"}, "data.eval_every = -1: must be >= 0"},
      {{"data.eval_batches=0"}, "data.eval_batches = 0: must be >= 1"},
      {{"checkpoint.every=-1"}, "checkpoint.every = -1"},
      {{"checkpoint.keep=0"}, "checkpoint.keep = 0: must be >= 1"},
      {{"logging.run_dir="}, "logging.run_dir is empty"},
      {{"logging.every=0"}, "logging.every = 0: must be >= 1"},
      {{"sample.tokens=-1"}, "sample.tokens = -1"},
      {{"sample.temperature=0"}, "sample.temperature = 0: must be > 0"},
      {{"sample.top_k=-1"}, "sample.top_k = -1: must be >= 0"},
  };
  for (const Case& c : cases) {
    std::string e = error_of("", c.overrides);
    INFO("overrides: ", c.overrides.front(), "; message: ", e);
    CHECK(e.find("config: " + c.expected) == 0);
    CHECK(one_line(e));
  }
}

TEST_CASE("the rules allow their boundary values") {
  CHECK(error_of("", {"data.val_fraction=0.5", "data.micro_batch_size=16", "data.eval_every=0",
                      "schedule.warmup_steps=1000", "schedule.min_lr_ratio=0", "optimizer.beta1=0",
                      "sample.top_k=0", "sample.tokens=0", "optimizer.grad_clip=0", "checkpoint.keep=1"}) ==
        "");
  // With a separate validation file, val_fraction is unused.
  CHECK(error_of("", {"data.val_path=val.txt", "data.val_fraction=0"}) == "");
  CHECK(error_of("", {"model.position=learned", "model.d_model=12", "model.n_heads=4"}) == "");
  CHECK(error_of("", {"attention.kind=dilated", "attention.segment_lengths=[128]",
                      "attention.dilation_rates=[128]"}) == "");
}

TEST_CASE("unknown keys, top level and nested, with suggestions for near misses") {
  CHECK(error_of("model:\n  n_layer: 3\n") == "config: unknown key model.n_layer (did you mean model.n_layers?)");
  CHECK(error_of("optimiser:\n  lr: 1\n") == "config: unknown key optimiser (did you mean optimizer?)");
  CHECK(error_of("sed: 3\n") == "config: unknown key sed (did you mean seed?)");
  CHECK(error_of("banana: 3\n") == "config: unknown key banana");
  CHECK(error_of("data:\n  banana: 3\n") == "config: unknown key data.banana");
  CHECK(error_of("model:\n  n_layers: 3\n  n_layers: 4\n") == "config: key model.n_layers appears twice");
}

TEST_CASE("wrong YAML types name the key") {
  CHECK(error_of("optimizer:\n  lr: fast\n") == "config: optimizer.lr: expected a number, got 'fast'");
  CHECK(error_of("optimizer:\n  lr: .nan\n") == "config: optimizer.lr: expected a number, got '.nan'");
  CHECK(error_of("model:\n  n_layers: 2.5\n") == "config: model.n_layers: expected an integer, got '2.5'");
  CHECK(error_of("model:\n  n_layers: four\n") == "config: model.n_layers: expected an integer, got 'four'");
  CHECK(error_of("model:\n  n_layers: {a: 1}\n") == "config: model.n_layers: expected an integer, got a map");
  CHECK(error_of("model:\n  n_layers: [1]\n") == "config: model.n_layers: expected an integer, got a list");
  CHECK(error_of("model:\n  n_layers:\n") == "config: model.n_layers: expected an integer, got nothing");
  CHECK(error_of("model:\n  n_layers: 99999999999\n").find("config: model.n_layers: 99999999999 is out of range") ==
        0);
  CHECK(error_of("seed: -1\n") == "config: seed: expected a non-negative integer, got '-1'");
  CHECK(error_of("model:\n  recompute: maybe\n") == "config: model.recompute: expected true or false, got 'maybe'");
  CHECK(error_of("device: gpu\n") == "config: device: expected one of auto | cpu | cuda, got 'gpu'");
  CHECK(error_of("data:\n  path: [a, b]\n") == "config: data.path: expected a string, got a list");
  CHECK(error_of("attention:\n  segment_lengths: 64\n") ==
        "config: attention.segment_lengths: expected a list of integers like [64, 128], got '64'");
  CHECK(error_of("attention:\n  segment_lengths: [64, x]\n") ==
        "config: attention.segment_lengths[1]: expected an integer, got 'x'");
  CHECK(error_of("model: 4\n") == "config: model: expected a map of model settings, got '4'");
  CHECK(error_of("- 1\n- 2\n").find("config: expected a map of sections") == 0);
}

TEST_CASE("a YAML syntax error names the source and the line") {
  std::string e = error_of("model:\n  n_layers: 4\n  d_model: [128\n");
  CHECK(e.find("config:") == 0);
  CHECK(e.find("YAML syntax error") != std::string::npos);
  std::string e2 = error_of("model:\n  n_layers: 4\n d_model: 128\n");
  CHECK(e2.find("config:3:") == 0);
}

TEST_CASE("a missing file names the file") {
  try {
    load_config_file("configs/no-such-config.yaml");
    FAIL("load_config_file accepted a missing file");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find("configs/no-such-config.yaml") != std::string::npos);
  }
}

TEST_CASE("errors in a file name the file") {
  CHECK_THROWS_WITH_AS(parse_config("seed: x", {}, "my.yaml"), "my.yaml: seed: expected a non-negative integer, got 'x'",
                       InputError);
}

TEST_CASE("the shipped configs parse") {
  Config tiny = load_config_file("configs/shakespeare-tiny.yaml");
  CHECK(tiny.model.n_layers == 4);
  CHECK(tiny.model.d_model == 128);
  CHECK(tiny.optimizer.lr == 2e-3);
  CHECK(tiny.logging.run_dir == "runs/shakespeare-tiny");
  CHECK(tiny.device == DeviceKind::cpu);
  CHECK(parse_config(config_to_yaml(tiny)) == tiny);

  Config micro = load_config_file("configs/test-micro.yaml", {"schedule.max_steps=30"});
  CHECK(micro.model.d_model == 32);
  CHECK(micro.sample.tokens == 20);
  CHECK(micro.schedule.max_steps == 30);
  CHECK(micro.logging.run_dir == "runs/test-micro");
}
