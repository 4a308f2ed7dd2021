// dilatron: the command-line entry point. Library code throws; this file alone decides exit
// statuses: 0 done (also after a signal-triggered checkpoint), 2 bad input, 1 anything else.
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "core/check.h"
#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "core/rng.h"
#include "trainer/attention_from_config.h"
#include "trainer/config.h"
#include "trainer/data.h"
#include "trainer/memory_estimate.h"
#include "trainer/model_from_config.h"
#include "trainer/sampling.h"
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

int command_config(const std::string& config_path, const std::vector<std::string>& overrides) {
  Config config = load_config_file(config_path, overrides);
  std::printf("%s", config_to_yaml(config).c_str());
  std::printf("# %s", describe_memory_estimate(config).c_str());
  return 0;
}

int command_generate(const std::string& checkpoint, const std::string& prompt, int64_t tokens,
                     double temperature, int top_k, uint64_t seed) {
  Config config = load_checkpoint_config(checkpoint);
  DILATRON_CHECK_INPUT(config.data.format == DataFormat::text,
                       "--checkpoint {}: the model was trained on token shards (data.format: tokens), and "
                       "dilatron has no tokenizer for them; generate needs a data.format: text model",
                       checkpoint);
  DILATRON_CHECK_INPUT(config.attention.causal,
                       "--checkpoint {}: the model was trained with attention.causal: false, so it cannot "
                       "predict the next token",
                       checkpoint);
  DILATRON_CHECK_INPUT(temperature > 0, "--temperature: must be > 0, got {}", temperature);
  DILATRON_CHECK_INPUT(top_k >= 0, "--top-k: must be >= 0, got {}", top_k);
  auto attention = single_rank_attention(config);
  Gpt<float> model(gpt_shape_from(config.model), 1, attention.get());
  load_checkpoint_weights(checkpoint, model);
  CounterRng rng(seed, 0x47454e4552415445ull);
  std::vector<int32_t> text = sample_continuation(model, encode_bytes(prompt), {tokens, temperature, top_k}, rng);
  std::printf("%s%s\n", prompt.c_str(), decode_bytes(text).c_str());
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

  CLI::App* generate = app.add_subcommand("generate", "sample text from a checkpoint");
  generate->add_option("--checkpoint", checkpoint, "checkpoint directory (RUN_DIR/checkpoints/step_N)")->required();
  generate->add_option("--prompt", prompt, "text to continue");
  generate->add_option("--tokens", tokens, "tokens to generate")->check(CLI::PositiveNumber);
  generate->add_option("--temperature", temperature, "softmax temperature (> 0)");
  generate->add_option("--top-k", top_k, "sample among the k most likely tokens (0: all)");
  generate->add_option("--seed", seed, "sampling seed");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*train) return command_train(config_path, overrides, resume, stop_at_step);
  if (*config) return command_config(config_path, overrides);
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
