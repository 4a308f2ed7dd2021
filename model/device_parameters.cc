#include "model/device_parameters.h"

#ifdef DILATRON_CUDA
#include "core/check.h"

namespace dilatron {

DeviceParameters::DeviceParameters(const GptShape& shape) : n_params_(gpt_num_params(shape)) {
  params_ = Tensor::zeros({n_params_}, DType::f32, Device::cuda);
  grads_ = Tensor::zeros({n_params_}, DType::f32, Device::cuda);
  group_begin_.assign(static_cast<size_t>(shape.n_layers) + 2, -1);
  for (const ParamSpec& p : gpt_param_specs(shape))
    if (group_begin_[p.group] < 0) group_begin_[p.group] = p.offset;
  params_held_.assign(group_begin_.size(), false);
  grads_held_.assign(group_begin_.size(), false);
}

const float* DeviceParameters::acquire(int group) {
  mark(params_held_, group, true, "acquire");
  return params() + group_begin_[group];
}

void DeviceParameters::release(int group) { mark(params_held_, group, false, "release"); }

float* DeviceParameters::acquire_gradients(int group) {
  mark(grads_held_, group, true, "acquire_gradients");
  return grads() + group_begin_[group];
}

void DeviceParameters::gradients_done(int group) { mark(grads_held_, group, false, "gradients_done"); }

void DeviceParameters::mark(std::vector<bool>& held, int group, bool to, const char* what) {
  DILATRON_CHECK(group >= 0 && group < static_cast<int>(held.size()), "{} of group {} outside [0, {})", what, group,
                 held.size());
  DILATRON_CHECK(held[group] != to, "{} of group {}, which is {}", what, group,
                 held[group] ? "already held" : "not held");
  held[group] = to;
}

}  // namespace dilatron
#endif
