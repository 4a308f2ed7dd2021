#include "trainer/step_model.h"

#include <utility>

#include "core/check.h"
#include "trainer/attention_from_config.h"
#include "trainer/step_model_cuda.h"

namespace dilatron {
namespace {

class CpuStepModel final : public StepModel {
 public:
  CpuStepModel(const Config& config, const GptShape& shape, int max_batch, TrainingState& state,
               ProcessGroups& groups)
      : attention_(sequence_attention_for(config, *groups.sequence_parallel)),
        model_(shape, max_batch, attention_.get(), state.parameter_source()) {
    state.attach(model_);
  }

  void train_micro_batch(const int32_t* inputs, const int32_t* targets, int rows, int Tc, int pos0,
                         double weight) override {
    train_loss_ += model_.forward(inputs, targets, rows, Tc, pos0);
    model_.backward(weight);
  }
  double take_train_loss() override { return std::exchange(train_loss_, 0.0); }
  double loss(const int32_t* inputs, const int32_t* targets, int rows, int Tc, int pos0) override {
    return model_.forward(inputs, targets, rows, Tc, pos0);
  }
  int64_t activation_bytes() const override { return static_cast<int64_t>(model_.activation_bytes()); }

 private:
  std::unique_ptr<SequenceAttention<float>> attention_;
  Gpt<float> model_;
  double train_loss_ = 0;
};

}  // namespace

std::unique_ptr<StepModel> make_step_model(const Config& config, const GptShape& shape, int max_batch,
                                           TrainingState& state, ProcessGroups& groups, TrainingDevice& device) {
  if (device.cuda()) return make_cuda_step_model(config, shape, max_batch, state, groups, device);
  return std::make_unique<CpuStepModel>(config, shape, max_batch, state, groups);
}

}  // namespace dilatron
