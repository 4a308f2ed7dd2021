// Parameters and gradients of a whole model resident in device memory, fp32, as one flat buffer
// each in the layout of gpt_param_specs: the GPU model's ParameterSource when nothing is
// partitioned (one GPU, or replicated data parallelism). A group's buffer is its slice.
#pragma once

#ifdef DILATRON_CUDA
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/gpt.h"
#include "model/parameter_source.h"

namespace dilatron {

class DeviceParameters final : public ParameterSource<float> {
 public:
  explicit DeviceParameters(const GptShape& shape);  // zeroed

  int64_t num_params() const { return n_params_; }
  // The parameters, to read.
  const float* params() const { return params_.data<float>(); }
  // The parameters, to write: each call moves parameters_version(), so a model drops what it
  // derived from the old values. Take it for every update (initialisation, restore, optimizer
  // step) and queue the writes on the model's stream, or finish them, before its next acquire.
  float* params_for_update() {
    ++version_;
    return params_.data<float>();
  }
  float* grads() const { return grads_.data<float>(); }

  const float* acquire(int group) override;
  void release(int group) override;
  float* acquire_gradients(int group) override;
  void gradients_done(int group) override;
  std::optional<uint64_t> parameters_version() const override { return version_; }

 private:
  uint64_t version_ = 0;
  int64_t n_params_;
  Tensor params_, grads_;
  std::vector<int64_t> group_begin_;
  HeldGroups params_held_, grads_held_;
};

}  // namespace dilatron
#endif
