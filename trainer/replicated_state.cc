// The replicated training state: every rank holds all parameters (in the model), all
// gradients and both AdamW moments; gradients are all-reduced. Rank 0 alone contributes the
// state to checkpoints, every rank reads all of it back.
#include <cmath>

#include <fmt/core.h>

#include "core/check.h"
#include "optim/adamw.h"
#include "optim/grad_norm.h"
#include "trainer/training_state_kinds.h"

namespace dilatron {

class ReplicatedState final : public TrainingState {
 public:
  ReplicatedState(const GptShape& shape, Communicator& world)
      : shape_(shape), world_(world), adam_m_(gpt_num_params(shape), 0.0f), adam_v_(gpt_num_params(shape), 0.0f) {}

  ParameterSource<float>* parameter_source() override { return nullptr; }
  void attach(Gpt<float>& model) override { model_ = &model; }

  void init_parameters(uint64_t seed) override { gpt_init_params(shape_, seed, model().params()); }
  void zero_gradients() override { model().zero_grads(); }
  void reduce_gradients() override {
    if (world_.size() > 1) world_.all_reduce(model().grads(), model().num_params(), DType::f32, ReduceOp::sum);
  }
  double gradient_sum_of_squares() override { return sum_of_squares_cpu(model().grads(), model().num_params()); }
  void scale_gradients(float factor) override {
    float* g = model().grads();
    for (int64_t i = 0, n = model().num_params(); i < n; ++i) g[i] *= factor;
  }
  void adamw_step(const OptimizerConfig& o, float lr, int64_t step) override {
    for (const ParamSpec& p : model().param_specs()) {
      AdamWStep s{lr, static_cast<float>(o.beta1), static_cast<float>(o.beta2), static_cast<float>(o.eps),
                  p.weight_decay ? static_cast<float>(o.weight_decay) : 0.0f, step};
      adamw_update_cpu(model().params() + p.offset, model().grads() + p.offset, adam_m_.data() + p.offset,
                       adam_v_.data() + p.offset, p.numel, s);
    }
  }

  std::vector<OwnedSlice> checkpoint_slices(std::vector<std::vector<float>>&) override {
    if (world_.rank() != 0) return {};
    const int64_t n = model().num_params();
    return {{"params", 0, n, model().params()}, {"adam_m", 0, n, adam_m_.data()}, {"adam_v", 0, n, adam_v_.data()}};
  }
  void restore(const ShardedCheckpoint& checkpoint) override {
    const int64_t n = model().num_params();
    checkpoint.read("params", 0, n, model().params());
    checkpoint.read("adam_m", 0, n, adam_m_.data());
    checkpoint.read("adam_v", 0, n, adam_v_.data());
  }

  std::string describe_memory() const override {
    const double mib = 1.0 / (1 << 20);
    const int64_t n = gpt_num_params(shape_);
    return fmt::format("replicated (zero.stage 0): per rank parameters {:.1f} MiB, gradients {:.1f} MiB, "
                       "optimizer state {:.1f} MiB, all in working memory",
                       4 * n * mib, 4 * n * mib, 8 * n * mib);
  }

 private:
  Gpt<float>& model() const {
    DILATRON_CHECK(model_ != nullptr, "ReplicatedState used before attach()");
    return *model_;
  }

  GptShape shape_;
  Communicator& world_;
  Gpt<float>* model_ = nullptr;
  std::vector<float> adam_m_, adam_v_;
};

std::unique_ptr<TrainingState> make_replicated_state(const GptShape& shape, Communicator& world) {
  return std::make_unique<ReplicatedState>(shape, world);
}

}  // namespace dilatron
