// The trainer's typed configuration: one YAML file (plus --set key.path=value overrides) parsed
// once into plain structs with an enum for every choice, validated as a whole before any work.
// docs/config.md lists every field; config.cc is the single place that knows the key names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dilatron {

enum class AttentionKind { dense, dilated };
enum class AttentionMode { longnet, head_groups };
enum class PositionEncoding { rotary, learned };
enum class NormType { layernorm, rmsnorm };
// text: raw bytes through the byte tokenizer (vocab 256); tokens: an llm.c/nanoGPT uint16 shard.
enum class DataFormat { text, tokens };
enum class DeviceKind { automatic, cpu, cuda };  // YAML: auto | cpu | cuda
enum class OffloadTier { device, cpu, nvme };
// How GPU ranks exchange device buffers: auto is nccl unless ranks share a GPU (then mpi).
enum class ParallelBackend { automatic, nccl, mpi };  // YAML: auto | nccl | mpi

struct ModelConfig {
  int n_layers = 4;
  int d_model = 128;
  int n_heads = 4;
  int vocab_size = 256;
  int seq_len = 128;
  int d_ff = 0;  // 0: 4 * d_model
  PositionEncoding position = PositionEncoding::rotary;
  NormType norm = NormType::layernorm;
  double rope_theta = 10000;
  double init_std = 0.02;
  bool recompute = false;
  bool operator==(const ModelConfig&) const = default;
};

struct AttentionConfig {
  AttentionKind kind = AttentionKind::dense;
  AttentionMode mode = AttentionMode::longnet;
  std::vector<int64_t> segment_lengths;  // one per dilated branch, paired with dilation_rates
  std::vector<int64_t> dilation_rates;
  bool causal = true;
  bool operator==(const AttentionConfig&) const = default;
};

struct ParallelConfig {
  int sequence_parallel = 1;
  ParallelBackend backend = ParallelBackend::automatic;
  // More ranks than GPUs on a node take turns on the GPUs (tests on one GPU); off, that is an error.
  bool share_gpus = false;
  // The ring attention's transfers run under its compute; off, each is waited before the compute
  // (same results), to measure how much of the exchange the overlap hides.
  bool overlap_ring = true;
  bool operator==(const ParallelConfig&) const = default;
};

struct ZeroConfig {
  int stage = 0;  // 0 or 3
  OffloadTier offload_params = OffloadTier::device;
  OffloadTier offload_optimizer = OffloadTier::device;
  std::string nvme_path;
  int64_t persistence_threshold = 0;  // elements; smaller parameters stay replicated
  int prefetch_depth = 1;
  int64_t nvme_block_bytes = 1 << 20;  // bytes per I/O request to the swap files
  int nvme_queue_depth = 8;            // I/O requests in flight per swap file
  int host_threads = 0;  // threads of the host ZeRO-3 engine; 0: auto_host_threads (zero/host_pool.h)
  bool operator==(const ZeroConfig&) const = default;
};

struct OptimizerConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // <= 0: off
  bool operator==(const OptimizerConfig&) const = default;
};

struct ScheduleConfig {
  int64_t max_steps = 1000;
  int64_t warmup_steps = 100;
  double min_lr_ratio = 0.1;
  bool operator==(const ScheduleConfig&) const = default;
};

struct DataConfig {
  std::string path = "data/tinyshakespeare.txt";
  DataFormat format = DataFormat::text;
  std::string val_path;  // empty: hold out the last val_fraction of path
  double val_fraction = 0.1;
  int64_t batch_size = 16;       // sequences per optimizer step, whole job
  int64_t micro_batch_size = 0;  // sequences per forward/backward per data-parallel rank; 0: all
  int64_t eval_every = 100;      // 0: off
  int64_t eval_batches = 8;
  bool operator==(const DataConfig&) const = default;
};

struct CheckpointConfig {
  int64_t every = 0;  // 0: only at the end and on SIGINT/SIGTERM
  int keep = 3;
  bool at_end = true;  // false: no checkpoint when the run ends normally (benchmarks); signals still write one
  bool operator==(const CheckpointConfig&) const = default;
};

struct LoggingConfig {
  std::string run_dir = "runs/default";
  int64_t every = 10;
  bool progress_bar = true;
  bool operator==(const LoggingConfig&) const = default;
};

struct SampleConfig {
  int64_t tokens = 300;  // generated at the end of training; 0: none
  std::string prompt = "\n";
  double temperature = 0.8;
  int top_k = 40;  // 0: sample from the whole vocabulary
  bool operator==(const SampleConfig&) const = default;
};

struct Config {
  ModelConfig model;
  AttentionConfig attention;
  ParallelConfig parallel;
  ZeroConfig zero;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  DataConfig data;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
  SampleConfig sample;
  DeviceKind device = DeviceKind::automatic;
  uint64_t seed = 1337;
  bool operator==(const Config&) const = default;
};

// Parses YAML into a Config, applies overrides "key.path=value" (value read as a YAML scalar or
// flow sequence, e.g. attention.segment_lengths=[64,128]) and validates. Every problem throws
// InputError with one line naming the full key path (or the file/override) and what is allowed.
// Keys left out keep their defaults; an empty document is the default Config.
Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides = {},
                    const std::string& source_name = "config");
Config load_config_file(const std::string& path, const std::vector<std::string>& overrides = {});

// The resolved config with every field, as YAML that parse_config reads back to an equal Config.
std::string config_to_yaml(const Config& config);

// The YAML spelling of each choice, for log lines and error messages.
std::string_view to_string(AttentionKind value);
std::string_view to_string(AttentionMode value);
std::string_view to_string(PositionEncoding value);
std::string_view to_string(NormType value);
std::string_view to_string(DataFormat value);
std::string_view to_string(DeviceKind value);
std::string_view to_string(OffloadTier value);
std::string_view to_string(ParallelBackend value);

}  // namespace dilatron
