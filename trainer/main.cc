// dilatron: the command-line entry point. Library code throws; this file alone decides exit
// statuses: 0 done (also after a signal-triggered checkpoint), 2 bad input, 1 anything else.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "core/check.h"
#include "core/rng.h"
#include "trainer/config.h"
#include "trainer/data.h"
#include "trainer/memory_estimate.h"
#include "trainer/model_from_config.h"
#include "trainer/sampling.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/train.h"
#include "trainer/training_state.h"

namespace dilatron {
namespace {

int command_train(const std::string& config_path, const std::vector<std::string>& overrides,
                  const std::string& resume, int64_t stop_at_step) {
  Config config = load_config_file(config_path, overrides);
  std::optional<InputError> input_error;
  {
    MpiRuntime mpi;
    int world_size = 0;
    try {
      ProcessGroups groups = make_process_groups(mpi_world_communicator(), config.parallel.sequence_parallel);
      groups.placement = mpi_placement();
      world_size = groups.world->size();
      TrainOptions options{resume, stop_at_step > 0 ? std::optional<int64_t>(stop_at_step) : std::nullopt};
      TrainSummary s = run_training(config, options, groups);
      if (groups.world->rank() == 0) {
        std::printf("steps %lld loss %.6f", static_cast<long long>(s.steps_done), s.last_loss);
        if (s.last_val_loss) std::printf(" val_loss %.6f", *s.last_val_loss);
        std::printf("\n");
      }
    } catch (const InputError& e) {
      // Alone, finish MPI cleanly and exit 2 below. With peers, the error may be this rank's
      // alone and the others would wait for it forever: abort the job, with status 2.
      if (world_size != 1) {
        std::fprintf(stderr, "error: %s\n", e.what());
        MpiRuntime::abort(2);
      }
      input_error = e;
    }
  }
  if (input_error) throw *input_error;
  return 0;
}

int command_config(const std::string& config_path, const std::vector<std::string>& overrides, int ranks) {
  Config config = load_config_file(config_path, overrides);
  std::printf("%s", config_to_yaml(config).c_str());
  std::printf("# %s", describe_memory_estimate(config, ranks > 0 ? ranks : config.parallel.sequence_parallel).c_str());
  return 0;
}

int command_generate(const std::string& checkpoint_dir, const std::string& prompt, int64_t tokens,
                     double temperature, int top_k, uint64_t seed) {
  ShardedCheckpoint checkpoint = ShardedCheckpoint::open(checkpoint_dir);
  Config config = checkpoint_config(checkpoint);
  DILATRON_CHECK_INPUT(config.data.format == DataFormat::text,
                       "--checkpoint {}: the model was trained on token shards (data.format: tokens), and "
                       "dilatron has no tokenizer for them; generate needs a data.format: text model",
                       checkpoint_dir);
  DILATRON_CHECK_INPUT(config.attention.causal,
                       "--checkpoint {}: the model was trained with attention.causal: false, so it cannot "
                       "predict the next token",
                       checkpoint_dir);
  DILATRON_CHECK_INPUT(temperature > 0, "--temperature: must be > 0, got {}", temperature);
  DILATRON_CHECK_INPUT(top_k >= 0, "--top-k: must be >= 0, got {}", top_k);
  CheckpointModel m = load_checkpoint_model(checkpoint, config, 1);
  CounterRng rng(seed, 0x47454e4552415445ull);
  std::vector<int32_t> text = sample_continuation(*m.model, encode_bytes(prompt), {tokens, temperature, top_k}, rng);
  std::printf("%s%s\n", prompt.c_str(), decode_bytes(text).c_str());
  return 0;
}

// The mean loss over validation windows: of the run's own validation split, or of all of FILE.
int command_eval(const std::string& checkpoint_dir, const std::string& data_path, int64_t batches) {
  ShardedCheckpoint checkpoint = ShardedCheckpoint::open(checkpoint_dir);
  Config config = checkpoint_config(checkpoint);
  DataSpec spec = data_spec_from(config);
  if (!data_path.empty()) {
    spec.path = data_path;
    spec.val_path = data_path;
  }
  const TokenData data = TokenData::load(spec);
  const int64_t rows_per_batch = config.data.batch_size;
  const int64_t wanted = (batches > 0 ? batches : config.data.eval_batches) * rows_per_batch;
  const int64_t count = std::min(wanted, data.num_val_sequences());
  DILATRON_CHECK_INPUT(count > 0, "--data: {} holds no validation window of model.seq_len + 1 = {} tokens",
                       spec.val_path.empty() ? spec.path : spec.val_path, config.model.seq_len + 1);
  const int T = config.model.seq_len;
  CheckpointModel m = load_checkpoint_model(checkpoint, config, static_cast<int>(rows_per_batch));
  std::vector<int32_t> inputs(rows_per_batch * T), targets(rows_per_batch * T);
  double loss_sum = 0;
  for (int64_t first = 0; first < count; first += rows_per_batch) {
    const int64_t rows = std::min(rows_per_batch, count - first);
    for (int64_t r = 0; r < rows; ++r)
      data.val_sequence(first + r, 0, T, inputs.data() + r * T, targets.data() + r * T);
    loss_sum += m.model->forward(inputs.data(), targets.data(), static_cast<int>(rows), T);
  }
  std::printf("sequences %lld tokens %lld\nval_loss %.6f\n", static_cast<long long>(count),
              static_cast<long long>(count * T), loss_sum / static_cast<double>(count * T));
  return 0;
}

int command_export(const std::string& checkpoint_dir, const std::string& out_path) {
  ShardedCheckpoint checkpoint = ShardedCheckpoint::open(checkpoint_dir);
  const std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  std::error_code error;
  if (!parent.empty()) std::filesystem::create_directories(parent, error);
  DILATRON_CHECK_INPUT(!error, "--out: cannot create directory {}: {}", parent.string(), error.message());
  export_safetensors(checkpoint, out_path);
  std::printf("%s\n", out_path.c_str());
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"dilatron: trains GPT-style transformers on sequences longer than one GPU holds"};
  app.require_subcommand(1);

  std::string config_path, resume, checkpoint, prompt = "\n";
  std::vector<std::string> overrides;
  int64_t stop_at_step = 0, tokens = 200;
  double temperature = 0.8;
  int top_k = 40;
  uint64_t seed = 1337;

  CLI::App* train = app.add_subcommand("train", "train a model from a YAML config");
  train->add_option("--config", config_path, "YAML config file")->required();
  train->add_option("--set", overrides, "override a config key: --set key.path=value (repeatable)");
  train->add_option("--resume", resume, "auto (newest valid checkpoint of logging.run_dir) or a checkpoint directory");
  train->add_option("--stop-at-step", stop_at_step,
                    "checkpoint and exit once this many steps are done (the schedule still ends at schedule.max_steps)");

  CLI::App* config = app.add_subcommand("config", "validate a config and print it resolved, with a memory estimate");
  config->add_option("--config", config_path, "YAML config file")->required();
  config->add_option("--set", overrides, "override a config key: --set key.path=value (repeatable)");
  int ranks = 0;
  config->add_option("--ranks", ranks, "ranks of the job, for the memory estimate (default: parallel.sequence_parallel)")
      ->check(CLI::PositiveNumber);

  CLI::App* generate = app.add_subcommand("generate", "sample text from a checkpoint");
  generate->add_option("--checkpoint", checkpoint, "checkpoint directory (RUN_DIR/checkpoints/step_N)")->required();
  generate->add_option("--prompt", prompt, "text to continue");
  generate->add_option("--tokens", tokens, "tokens to generate")->check(CLI::PositiveNumber);
  generate->add_option("--temperature", temperature, "softmax temperature (> 0)");
  generate->add_option("--top-k", top_k, "sample among the k most likely tokens (0: all)");
  generate->add_option("--seed", seed, "sampling seed");

  std::string data_path, out_path;
  int64_t batches = 0;
  CLI::App* eval = app.add_subcommand("eval", "mean validation loss of a checkpoint (last line: val_loss <float>)");
  eval->add_option("--checkpoint", checkpoint, "checkpoint directory")->required();
  eval->add_option("--data", data_path, "evaluate on all of this file (same format as the run's data) instead of the run's validation split");
  eval->add_option("--batches", batches, "batches of data.batch_size sequences (default: data.eval_batches)")->check(CLI::PositiveNumber);

  CLI::App* export_cmd = app.add_subcommand("export", "consolidated fp32 weights as safetensors, with config.json beside them");
  export_cmd->add_option("--checkpoint", checkpoint, "checkpoint directory")->required();
  export_cmd->add_option("--out", out_path, "output .safetensors file")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*train) return command_train(config_path, overrides, resume, stop_at_step);
  if (*config) return command_config(config_path, overrides, ranks);
  if (*eval) return command_eval(checkpoint, data_path, batches);
  if (*export_cmd) return command_export(checkpoint, out_path);
  return command_generate(checkpoint, prompt, tokens, temperature, top_k, seed);
}

}  // namespace
}  // namespace dilatron

int main(int argc, char** argv) {
  try {
    // Logs and warnings on stderr; stdout carries only results (summary line, samples, configs).
    spdlog::set_default_logger(spdlog::stderr_color_mt("dilatron"));
    return dilatron::run(argc, argv);
  } catch (const dilatron::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 1;
  }
}
