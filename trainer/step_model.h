// What the training loop runs for one micro-batch, on whichever device the run uses: the CPU
// model (model/gpt.h, fp32) or the GPU model (model/gpt_cuda.h, bf16 compute on fp32 master
// weights). Either reads and writes parameters through the run's TrainingState.
#pragma once

#include <cstdint>
#include <memory>

#include "comm/process_groups.h"
#include "model/gpt.h"
#include "trainer/config.h"
#include "trainer/training_device.h"
#include "trainer/training_state.h"

namespace dilatron {

class StepModel {
 public:
  virtual ~StepModel() = default;

  // inputs, targets: host (rows, Tc) tokens of this rank's chunk starting at position pos0.
  // gradients += d(weight x summed loss) / d params; the summed token loss is kept for
  // take_train_loss. The GPU model only queues the work.
  virtual void train_micro_batch(const int32_t* inputs, const int32_t* targets, int rows, int Tc, int pos0,
                                 double weight) = 0;
  // The summed token losses of the micro-batches trained since the last call, added up in their
  // order. The GPU model waits for them here, once per optimizer step, instead of synchronising
  // its stream between every micro-batch's forward and backward.
  virtual double take_train_loss() = 0;
  // The summed token loss only (validation).
  virtual double loss(const int32_t* inputs, const int32_t* targets, int rows, int Tc, int pos0) = 0;
  // Activation memory of one micro-batch, for the start-of-run memory line.
  virtual int64_t activation_bytes() const = 0;
};

// The model for this run's device, with attention for this rank's chunk (ring dilated attention
// over the sequence-parallel group when it has several ranks). `state` and `device` must outlive it.
std::unique_ptr<StepModel> make_step_model(const Config& config, const GptShape& shape, int max_batch,
                                           TrainingState& state, ProcessGroups& groups, TrainingDevice& device);

}  // namespace dilatron
