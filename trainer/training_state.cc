#include "trainer/training_state.h"

#include "core/check.h"
#include "trainer/attention_from_config.h"
#include "trainer/model_from_config.h"
#include "trainer/training_state_kinds.h"

namespace dilatron {
namespace {

nlohmann::json model_shape_json(const ModelConfig& m) {
  return {{"n_layers", m.n_layers}, {"d_model", m.d_model}, {"n_heads", m.n_heads},
          {"vocab_size", m.vocab_size}, {"seq_len", m.seq_len}, {"d_ff", m.d_ff},
          {"position", std::string(to_string(m.position))}, {"norm", std::string(to_string(m.norm))}};
}

std::vector<CheckpointTensor> tensor_table(const GptShape& shape) {
  std::vector<CheckpointTensor> table;
  for (const ParamSpec& p : gpt_param_specs(shape)) table.push_back({p.name, p.shape, p.offset, p.numel});
  return table;
}

void require_same_model(const nlohmann::json& saved, const ModelConfig& current, const std::string& dir) {
  const nlohmann::json now = model_shape_json(current);
  for (auto& [key, value] : now.items()) {
    DILATRON_CHECK_INPUT(saved.contains(key) && saved[key] == value,
                         "checkpoint {} was written for a different model: model.{} is {} there and {} in "
                         "this config; resume with the config it was trained with or start a new "
                         "logging.run_dir",
                         dir, key, saved.contains(key) ? saved[key].dump() : "absent", value.dump());
  }
}

}  // namespace

std::string save_checkpoint(Communicator& world, const Config& config, int64_t step, TrainingState& state) {
  nlohmann::json metadata{{"config", config_to_yaml(config)},
                          {"model", model_shape_json(config.model)},
                          {"data", {{"seed", config.seed}, {"next_step", step}}}};
  std::vector<std::vector<float>> copies;
  const std::vector<OwnedSlice> slices = state.checkpoint_slices(copies);
  return write_sharded_checkpoint(world, config.logging.run_dir, step, tensor_table(gpt_shape_from(config.model)),
                                  slices, metadata, config.checkpoint.keep);
}

int64_t restore_checkpoint(const std::string& dir, const Config& config, TrainingState& state) {
  ShardedCheckpoint checkpoint = ShardedCheckpoint::open(dir);
  DILATRON_CHECK_INPUT(checkpoint.metadata().contains("model"), "checkpoint {}: manifest has no model shape", dir);
  require_same_model(checkpoint.metadata()["model"], config.model, dir);
  state.restore(checkpoint);
  return checkpoint.step();
}

Config checkpoint_config(const ShardedCheckpoint& checkpoint) {
  const nlohmann::json& meta = checkpoint.metadata();
  DILATRON_CHECK_INPUT(meta.contains("config") && meta["config"].is_string(),
                       "checkpoint {}: manifest.json has no config", checkpoint.dir());
  return parse_config(meta["config"].get<std::string>(), {}, checkpoint.dir() + "/manifest.json");
}

CheckpointModel load_checkpoint_model(const ShardedCheckpoint& checkpoint, const Config& config, int max_batch) {
  CheckpointModel m;
  m.attention = single_rank_attention(config);
  m.model = std::make_unique<Gpt<float>>(gpt_shape_from(config.model), max_batch, m.attention.get());
  int64_t stored = 0;
  for (const CheckpointTensor& t : checkpoint.tensors()) stored += t.numel;
  DILATRON_CHECK_INPUT(stored == m.model->num_params(), "checkpoint {} holds {} parameters, the model has {}",
                       checkpoint.dir(), stored, m.model->num_params());
  checkpoint.read("params", 0, m.model->num_params(), m.model->params());
  return m;
}

std::unique_ptr<TrainingState> make_training_state(const Config& config, const GptShape& shape, Communicator& world,
                                                  TrainingDevice& device) {
#ifdef DILATRON_CUDA
  if (device.cuda()) {
    if (config.zero.stage == 3) {
      const bool params_on_gpu = config.zero.offload_params == OffloadTier::device;
      DILATRON_CHECK_INPUT(params_on_gpu == (config.zero.offload_optimizer == OffloadTier::device),
                           "zero.offload_params ({}) and zero.offload_optimizer ({}): on a GPU run both shards "
                           "live in GPU memory (both device) or both off it (cpu or nvme); set them alike",
                           to_string(config.zero.offload_params), to_string(config.zero.offload_optimizer));
      if (params_on_gpu) return make_device_zero3_state(config, shape, world, device.world(), device.stream());
      return make_staged_zero3_state(config, shape, world, device.ranks_on_node(), device.stream());
    }
    return make_device_replicated_state(shape, device.world(), device.stream());
  }
#else
  DILATRON_CHECK(!device.cuda(), "a GPU training device in a build without CUDA");
#endif
  if (config.zero.stage == 3) return make_zero3_state(config, shape, world, device.ranks_on_node());
  return make_replicated_state(shape, world);
}

}  // namespace dilatron
