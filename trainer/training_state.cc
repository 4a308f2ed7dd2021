#include "trainer/training_state.h"

#include <cstring>
#include <map>

#include "core/check.h"
#include "trainer/checkpoint_files.h"
#include "trainer/model_from_config.h"

namespace dilatron {
namespace {

nlohmann::json model_shape_json(const ModelConfig& m) {
  return {{"n_layers", m.n_layers}, {"d_model", m.d_model}, {"n_heads", m.n_heads},
          {"vocab_size", m.vocab_size}, {"seq_len", m.seq_len}, {"d_ff", m.d_ff},
          {"position", m.position == PositionEncoding::learned ? "learned" : "rotary"},
          {"norm", m.norm == NormType::rmsnorm ? "rmsnorm" : "layernorm"}};
}

Tensor tensor_from(const float* src, const std::vector<int64_t>& shape) {
  Tensor t = Tensor::empty(shape, DType::f32);
  std::memcpy(t.raw(), src, t.nbytes());
  return t;
}

// Copies each named tensor of the checkpoint into the flat buffer at its parameter's offset.
void copy_named(const std::map<std::string, const Tensor*>& by_name, const std::string& prefix,
                const std::vector<ParamSpec>& specs, float* flat, const std::string& dir) {
  for (const ParamSpec& p : specs) {
    auto it = by_name.find(prefix + p.name);
    DILATRON_CHECK_INPUT(it != by_name.end(), "checkpoint {}: tensor {} is missing", dir, prefix + p.name);
    const Tensor& t = *it->second;
    DILATRON_CHECK_INPUT(t.dtype() == DType::f32 && t.numel() == p.numel,
                         "checkpoint {}: tensor {} is {}, expected {} f32 elements", dir, prefix + p.name,
                         t.describe(), p.numel);
    std::memcpy(flat + p.offset, t.raw(), t.nbytes());
  }
}

std::map<std::string, const Tensor*> index_by_name(const std::vector<NamedTensor>& tensors) {
  std::map<std::string, const Tensor*> m;
  for (const NamedTensor& t : tensors) m[t.name] = &t.tensor;
  return m;
}

void require_same_model(const nlohmann::json& saved, const ModelConfig& current, const std::string& dir) {
  nlohmann::json now = model_shape_json(current);
  for (auto& [key, value] : now.items()) {
    DILATRON_CHECK_INPUT(saved.contains(key) && saved[key] == value,
                         "checkpoint {} was written for a different model: model.{} is {} there and {} in "
                         "this config; resume with the config it was trained with or start a new "
                         "logging.run_dir",
                         dir, key, saved.contains(key) ? saved[key].dump() : "absent", value.dump());
  }
}

}  // namespace

TrainingState::TrainingState(const GptShape& shape)
    : adam_m(gpt_num_params(shape), 0.0f), adam_v(gpt_num_params(shape), 0.0f) {}

std::string save_training_state(const Config& config, int64_t step, Gpt<float>& model, const TrainingState& state) {
  std::vector<NamedTensor> tensors;
  for (const ParamSpec& p : gpt_param_specs(model.shape())) {
    tensors.push_back({p.name, tensor_from(model.params() + p.offset, p.shape)});
    tensors.push_back({"optimizer.m." + p.name, tensor_from(state.adam_m.data() + p.offset, p.shape)});
    tensors.push_back({"optimizer.v." + p.name, tensor_from(state.adam_v.data() + p.offset, p.shape)});
  }
  nlohmann::json meta{{"config", config_to_yaml(config)},
                      {"model", model_shape_json(config.model)},
                      {"data", {{"seed", config.seed}, {"next_step", step}}},
                      {"world", {{"ranks", 1}}}};
  return write_checkpoint(config.logging.run_dir, step, tensors, meta, config.checkpoint.keep);
}

int64_t load_training_state(const std::string& dir, const Config& config, Gpt<float>& model, TrainingState& state) {
  LoadedCheckpoint ck = read_checkpoint(dir);
  require_same_model(ck.state.at("model"), config.model, dir);
  auto by_name = index_by_name(ck.tensors);
  auto specs = gpt_param_specs(model.shape());
  copy_named(by_name, "", specs, model.params(), dir);
  copy_named(by_name, "optimizer.m.", specs, state.adam_m.data(), dir);
  copy_named(by_name, "optimizer.v.", specs, state.adam_v.data(), dir);
  return ck.step;
}

Config load_checkpoint_config(const std::string& dir) {
  LoadedCheckpoint ck = read_checkpoint(dir);
  DILATRON_CHECK_INPUT(ck.state.contains("config") && ck.state["config"].is_string(),
                       "checkpoint {}: state.json has no config", dir);
  return parse_config(ck.state["config"].get<std::string>(), {}, dir + "/state.json");
}

void load_checkpoint_weights(const std::string& dir, Gpt<float>& model) {
  LoadedCheckpoint ck = read_checkpoint(dir);
  copy_named(index_by_name(ck.tensors), "", gpt_param_specs(model.shape()), model.params(), dir);
}

}  // namespace dilatron
