#include "trainer/step_model_cuda.h"

#include "core/check.h"
#include "trainer/attention_from_config.h"

#ifdef DILATRON_CUDA
#include "attention/device_sequence_attention.h"
#include "attention/dilated_attention_cuda.h"
#include "attention/ring_dilated_attention_cuda.h"
#include "model/gpt_cuda.h"
#endif

namespace dilatron {

#ifdef DILATRON_CUDA
namespace {

// Attention over this rank's chunk: single-rank dilated (dense being one branch) or the ring
// over the sequence-parallel group's device communicator.
std::unique_ptr<DeviceSequenceAttention<bf16>> device_attention_for(const Config& config, const GptShape& shape,
                                                                    int max_batch, ProcessGroups& groups,
                                                                    TrainingDevice& device) {
  const int D = shape.d_model / shape.n_heads;
  if (groups.sp_size == 1)
    return make_dilated_attention_cuda<bf16>(dilated_spec_from(config), max_batch, shape.seq_len, shape.n_heads, D);
  return make_ring_dilated_attention_cuda<bf16>(dilated_spec_from(config), max_batch, shape.seq_len, shape.n_heads,
                                                D, device.sequence_parallel(), ring_schedule_from(config));
}

class CudaStepModel final : public StepModel {
 public:
  CudaStepModel(const Config& config, const GptShape& shape, int max_batch, TrainingState& state,
                ProcessGroups& groups, TrainingDevice& device)
      : attention_(device_attention_for(config, shape, max_batch, groups, device)),
        model_(shape, max_batch, *state.parameter_source(), attention_.get(), device.stream()) {}

  void train_micro_batch(const int32_t* inputs, const int32_t* targets, int rows, int Tc, int pos0,
                         double weight) override {
    model_.queue_forward_backward(inputs, targets, rows, Tc, pos0, weight);
  }
  double take_train_loss() override { return model_.take_queued_loss(); }
  double loss(const int32_t* inputs, const int32_t* targets, int rows, int Tc, int pos0) override {
    return model_.forward(inputs, targets, rows, Tc, pos0);
  }
  int64_t activation_bytes() const override { return model_.activation_bytes(); }

 private:
  std::unique_ptr<DeviceSequenceAttention<bf16>> attention_;
  GptCuda<bf16> model_;
};

}  // namespace

std::unique_ptr<StepModel> make_cuda_step_model(const Config& config, const GptShape& shape, int max_batch,
                                                TrainingState& state, ProcessGroups& groups,
                                                TrainingDevice& device) {
  DILATRON_CHECK(state.parameter_source() != nullptr, "the GPU model needs a device ParameterSource");
  return std::make_unique<CudaStepModel>(config, shape, max_batch, state, groups, device);
}
#else
std::unique_ptr<StepModel> make_cuda_step_model(const Config&, const GptShape&, int, TrainingState&,
                                                ProcessGroups&, TrainingDevice&) {
  DILATRON_CHECK(false, "make_cuda_step_model in a build without CUDA (TrainingDevice should have refused)");
  return nullptr;
}
#endif

}  // namespace dilatron
