// What a checkpoint holds for the single-process trainer: every parameter and both AdamW
// moments by name (safetensors), plus the step, the resolved config and the model shape.
// The data order is a pure function of (seed, step), so the step is the data position.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/gpt.h"
#include "trainer/config.h"

namespace dilatron {

struct TrainingState {
  explicit TrainingState(const GptShape& shape);
  std::vector<float> adam_m, adam_v;  // same flat layout as the parameters
};

// Writes RUN_DIR/checkpoints/step_NNNNNNNN atomically; returns its directory.
std::string save_training_state(const Config& config, int64_t step, Gpt<float>& model, const TrainingState& state);

// Loads a checkpoint written by save_training_state into model and state and returns its step.
// A checkpoint of another model shape is refused with an InputError naming the key.
int64_t load_training_state(const std::string& dir, const Config& config, Gpt<float>& model, TrainingState& state);

// Only the weights, for generate and eval: also returns the config the checkpoint was trained with.
Config load_checkpoint_config(const std::string& dir);
void load_checkpoint_weights(const std::string& dir, Gpt<float>& model);

}  // namespace dilatron
