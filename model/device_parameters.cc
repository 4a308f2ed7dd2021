#include "model/device_parameters.h"

#ifdef DILATRON_CUDA
#include "core/check.h"

namespace dilatron {

DeviceParameters::DeviceParameters(const GptShape& shape)
    : n_params_(gpt_num_params(shape)),
      params_(Tensor::zeros({n_params_}, DType::f32, Device::cuda)),
      grads_(Tensor::zeros({n_params_}, DType::f32, Device::cuda)),
      group_begin_(gpt_group_offsets(shape).group_begin),
      params_held_(group_begin_.size()),
      grads_held_(group_begin_.size()) {}

const float* DeviceParameters::acquire(int group) {
  params_held_.mark(group, true, "acquire");
  return params() + group_begin_[group];
}

void DeviceParameters::release(int group) { params_held_.mark(group, false, "release"); }

float* DeviceParameters::acquire_gradients(int group) {
  grads_held_.mark(group, true, "acquire_gradients");
  return grads() + group_begin_[group];
}

void DeviceParameters::gradients_done(int group) { grads_held_.mark(group, false, "gradients_done"); }

}  // namespace dilatron
#endif
