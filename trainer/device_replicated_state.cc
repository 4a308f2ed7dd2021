// The replicated training state on a GPU: parameters, gradients and both AdamW moments in fp32
// device memory on every rank (model/device_parameters.h is the model's ParameterSource);
// gradients are all-reduced by the device communicator, the norm, clipping and AdamW run on the
// device. Rank 0 alone contributes to checkpoints (through host copies), every rank reads back.
// Every write to the parameters (init, restore, AdamW) takes params_for_update(), on the model's
// stream: that is what tells the GPU model to round its kept bf16 copies again.
// The GPU twin of replicated_state.cc.
#ifdef DILATRON_CUDA
#include <fmt/core.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "model/device_parameters.h"
#include "optim/adamw.h"
#include "optim/grad_norm.h"
#include "trainer/training_state_kinds.h"

namespace dilatron {
namespace {

std::vector<float> to_host(const float* device, int64_t n, cudaStream_t stream) {
  std::vector<float> host(static_cast<size_t>(n));
  DILATRON_CUDA_CHECK(cudaMemcpyAsync(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

void to_device(float* device, const std::vector<float>& host, cudaStream_t stream) {
  DILATRON_CUDA_CHECK(
      cudaMemcpyAsync(device, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, stream));
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream));
}

std::vector<AdamWSegment> adamw_segments(const std::vector<ParamSpec>& specs) {
  std::vector<AdamWSegment> segments;
  for (const ParamSpec& p : specs) segments.push_back({p.offset, p.numel, p.weight_decay});
  return segments;
}

class DeviceReplicatedState final : public TrainingState {
 public:
  DeviceReplicatedState(const GptShape& shape, Communicator& device_world, cudaStream_t stream)
      : shape_(shape),
        world_(device_world),
        stream_(stream),
        adamw_segments_(adamw_segments(gpt_param_specs(shape)), stream),
        params_(shape),
        adam_m_(Tensor::zeros({params_.num_params()}, DType::f32, Device::cuda)),
        adam_v_(Tensor::zeros({params_.num_params()}, DType::f32, Device::cuda)) {}

  ParameterSource<float>* parameter_source() override { return &params_; }
  void attach(Gpt<float>&) override {
    DILATRON_CHECK(false, "the GPU training state serves the GPU model, not the CPU one");
  }

  void init_parameters(uint64_t seed) override {
    std::vector<float> host(static_cast<size_t>(n()));
    gpt_init_params(shape_, seed, host.data());
    to_device(params_.params_for_update(), host, stream_);
  }
  void zero_gradients() override {
    DILATRON_CUDA_CHECK(cudaMemsetAsync(params_.grads(), 0, n() * sizeof(float), stream_));
  }
  void reduce_gradients() override {
    if (world_.size() > 1) world_.all_reduce(params_.grads(), n(), DType::f32, ReduceOp::sum);
  }
  double gradient_sum_of_squares() override { return sum_of_squares_cuda(params_.grads(), n(), stream_); }
  void scale_gradients(float factor) override { scale_cuda(params_.grads(), n(), factor, stream_); }
  void adamw_step(const OptimizerConfig& o, float lr, int64_t step) override {
    const AdamWStep s{lr, static_cast<float>(o.beta1), static_cast<float>(o.beta2), static_cast<float>(o.eps),
                      static_cast<float>(o.weight_decay), step};
    adamw_update_segments_cuda(params_.params_for_update(), params_.grads(), adam_m_.data<float>(),
                               adam_v_.data<float>(), adamw_segments_, s, stream_);
  }

  std::vector<OwnedSlice> checkpoint_slices(std::vector<std::vector<float>>& copies) override {
    if (world_.rank() != 0) return {};
    copies.push_back(to_host(params_.params(), n(), stream_));
    copies.push_back(to_host(adam_m_.data<float>(), n(), stream_));
    copies.push_back(to_host(adam_v_.data<float>(), n(), stream_));
    return {{"params", 0, n(), copies[0].data()},
            {"adam_m", 0, n(), copies[1].data()},
            {"adam_v", 0, n(), copies[2].data()}};
  }
  void restore(const ShardedCheckpoint& checkpoint) override {
    std::vector<float> host(static_cast<size_t>(n()));
    for (auto [kind, device] : {std::pair<const char*, float*>{"params", params_.params_for_update()},
                                {"adam_m", adam_m_.data<float>()},
                                {"adam_v", adam_v_.data<float>()}}) {
      checkpoint.read(kind, 0, n(), host.data());
      to_device(device, host, stream_);
    }
  }

  std::string describe_memory() const override {
    const double mib = 1.0 / (1 << 20);
    return fmt::format("replicated (zero.stage 0) on the GPU: per rank parameters {:.1f} MiB, gradients {:.1f} "
                       "MiB, optimizer state {:.1f} MiB, all fp32 in GPU memory",
                       4 * n() * mib, 4 * n() * mib, 8 * n() * mib);
  }

 private:
  int64_t n() const { return params_.num_params(); }

  GptShape shape_;
  Communicator& world_;
  cudaStream_t stream_;
  // Every parameter tensor as a segment with its weight-decay setting: AdamW is one launch.
  AdamWSegmentTable adamw_segments_;
  DeviceParameters params_;
  Tensor adam_m_, adam_v_;
};

}  // namespace

std::unique_ptr<TrainingState> make_device_replicated_state(const GptShape& shape, Communicator& device_world,
                                                            cudaStream_t stream) {
  return std::make_unique<DeviceReplicatedState>(shape, device_world, stream);
}

}  // namespace dilatron
#endif
