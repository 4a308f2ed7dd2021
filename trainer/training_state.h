// The trainable state of a run (parameters, gradients and both AdamW moments), either
// replicated on every rank or partitioned across the world by ZeRO-3. The training loop
// drives both through this interface, and both checkpoint in the same world-size-independent
// format (trainer/sharded_checkpoint.h), so a run resumes on any number of ranks.
// The data order is a pure function of (seed, step), so a checkpoint's step is its data position.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "model/gpt.h"
#include "model/parameter_source.h"
#include "trainer/config.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/training_device.h"

namespace dilatron {

class TrainingState {
 public:
  virtual ~TrainingState() = default;

  // What the model should fetch its parameters from; nullptr: the model holds them itself.
  virtual ParameterSource<float>* parameter_source() = 0;
  // Called once the model exists (the replicated state works on the model's own buffers).
  virtual void attach(Gpt<float>& model) = 0;

  virtual void init_parameters(uint64_t seed) = 0;
  virtual void zero_gradients() = 0;
  // After every micro-batch's backward: the gradients become sums over the world.
  virtual void reduce_gradients() = 0;
  // Of the world's gradient (identical on every rank).
  virtual double gradient_sum_of_squares() = 0;
  virtual void scale_gradients(float factor) = 0;
  // One AdamW step (step is 1-based); weight decay only on ParamSpec::weight_decay tensors.
  virtual void adamw_step(const OptimizerConfig& optimizer, float lr, int64_t step) = 0;

  // This rank's share of the kinds "params", "adam_m", "adam_v", in logical coordinates
  // (ParamSpec offsets). A state that must copy its data first puts the copies in `copies`,
  // which the caller keeps while it uses the slices and frees afterwards (so a checkpoint
  // does not raise the memory held during training).
  virtual std::vector<OwnedSlice> checkpoint_slices(std::vector<std::vector<float>>& copies) = 0;
  virtual void restore(const ShardedCheckpoint& checkpoint) = 0;

  // One line: bytes held per rank by parameters, gradients, optimizer state, per tier.
  virtual std::string describe_memory() const = 0;

  // Measurements of the step just taken that belong in its metrics row (the staged GPU state:
  // the time its copy stream spent moving groups); none by default.
  virtual void add_step_metrics(nlohmann::json& row) { (void)row; }
};

// Replicated unless zero.stage is 3; on the device the run trains on. `world` is the MPI world
// (host buffers); a GPU state takes its device communicator from `device`.
std::unique_ptr<TrainingState> make_training_state(const Config& config, const GptShape& shape, Communicator& world,
                                                  TrainingDevice& device);

// Collective: writes RUN_DIR/checkpoints/step_NNNNNNNN from every rank's share.
std::string save_checkpoint(Communicator& world, const Config& config, int64_t step, TrainingState& state);

// Loads a checkpoint into state and returns its step. A checkpoint of another model shape is
// refused with an InputError naming the key.
int64_t restore_checkpoint(const std::string& dir, const Config& config, TrainingState& state);

// The config a checkpoint was trained with.
Config checkpoint_config(const ShardedCheckpoint& checkpoint);

// For generate, eval and the end-of-training sample: a model on one rank (single-rank
// attention of `config`) holding the checkpoint's full parameters, whatever the world size
// and partitioning of the run that wrote it.
struct CheckpointModel {
  std::unique_ptr<SequenceAttention<float>> attention;  // the model points at it
  std::unique_ptr<Gpt<float>> model;
};
CheckpointModel load_checkpoint_model(const ShardedCheckpoint& checkpoint, const Config& config, int max_batch);

}  // namespace dilatron
