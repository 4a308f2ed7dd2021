// ZeRO-3 for the GPU model with host-resident shards (zero.offload_params: cpu or nvme): the
// host engine (zero/zero3.h) keeps the partitioned parameters, gradients and AdamW state and
// runs the optimizer step on the CPU, as ZeRO-Offload does; this state only moves each group
// between the engine and the GPU as the model asks for it:
//   acquire(g):        the engine gathers g (host), it is copied to a device slot, the engine copy is released;
//   gradients_done(g): the device gradients are copied into the engine's buffer, which reduce-scatters them.
// Two device slots suffice (group 0, held from the LM head to the embedding backward, and the one
// other group the model holds at a time), so GPU memory holds at most two groups of parameters
// and two of gradients whatever the model size.
#ifdef DILATRON_CUDA
#include <algorithm>

#include <fmt/core.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "trainer/training_state_kinds.h"

namespace dilatron {
namespace {

class DeviceStagedSource final : public ParameterSource<float> {
 public:
  DeviceStagedSource(ParameterSource<float>& host, const GptShape& shape, cudaStream_t stream)
      : host_(host), stream_(stream), numel_(gpt_group_offsets(shape).group_numel) {
    const int64_t largest_other = *std::max_element(numel_.begin() + 1, numel_.end());
    for (Slot* s : {&params_[0], &grads_[0]}) s->buffer = Tensor::empty({numel_[0]}, DType::f32, Device::cuda);
    for (Slot* s : {&params_[1], &grads_[1]}) s->buffer = Tensor::empty({largest_other}, DType::f32, Device::cuda);
  }

  const float* acquire(int group) override {
    Slot& slot = take(params_, group, "acquire");
    const float* host = host_.acquire(group);
    copy(slot.data(), host, group, cudaMemcpyHostToDevice);
    host_.release(group);
    return slot.data();
  }
  void release(int group) override { give(params_, group, "release"); }

  float* acquire_gradients(int group) override {
    Slot& slot = take(grads_, group, "acquire_gradients");
    DILATRON_CUDA_CHECK(cudaMemsetAsync(slot.data(), 0, numel_[group] * sizeof(float), stream_));
    return slot.data();
  }
  void gradients_done(int group) override {
    Slot& slot = grads_[group == 0 ? 0 : 1];
    // The engine's buffer starts at zero, so writing the group's gradients is adding them.
    float* host = host_.acquire_gradients(group);
    copy(host, slot.data(), group, cudaMemcpyDeviceToHost);
    host_.gradients_done(group);
    give(grads_, group, "gradients_done");
  }
  void will_acquire(int group) override { host_.will_acquire(group); }

 private:
  struct Slot {
    Tensor buffer;
    int group = -1;  // held by the model, or -1
    float* data() const { return buffer.data<float>(); }
  };

  Slot& take(Slot* slots, int group, const char* what) {
    DILATRON_CHECK(group >= 0 && group < static_cast<int>(numel_.size()), "{} of group {} outside [0, {})", what,
                   group, numel_.size());
    Slot& slot = slots[group == 0 ? 0 : 1];
    DILATRON_CHECK(slot.group < 0, "{} of group {} while group {} still holds its device slot", what, group,
                   slot.group);
    slot.group = group;
    return slot;
  }
  void give(Slot* slots, int group, const char* what) {
    Slot& slot = slots[group == 0 ? 0 : 1];
    DILATRON_CHECK(slot.group == group, "{} of group {}, which is not held", what, group);
    slot.group = -1;
  }
  // Synchronous: the engine may reuse its host buffer as soon as we hand it back.
  void copy(float* dst, const float* src, int group, cudaMemcpyKind kind) {
    DILATRON_CUDA_CHECK(cudaMemcpyAsync(dst, src, numel_[group] * sizeof(float), kind, stream_));
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  ParameterSource<float>& host_;
  cudaStream_t stream_;
  std::vector<int64_t> numel_;
  Slot params_[2], grads_[2];
};

class StagedZero3State final : public TrainingState {
 public:
  StagedZero3State(std::unique_ptr<TrainingState> host, const GptShape& shape, cudaStream_t stream)
      : host_(std::move(host)), source_(*host_->parameter_source(), shape, stream), stream_(stream) {}

  ParameterSource<float>* parameter_source() override { return &source_; }
  void attach(Gpt<float>&) override {
    DILATRON_CHECK(false, "the GPU training state serves the GPU model, not the CPU one");
  }
  void init_parameters(uint64_t seed) override { host_->init_parameters(seed); }
  void zero_gradients() override { host_->zero_gradients(); }
  void reduce_gradients() override {
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
    host_->reduce_gradients();
  }
  double gradient_sum_of_squares() override { return host_->gradient_sum_of_squares(); }
  void scale_gradients(float factor) override { host_->scale_gradients(factor); }
  void adamw_step(const OptimizerConfig& o, float lr, int64_t step) override { host_->adamw_step(o, lr, step); }
  std::vector<OwnedSlice> checkpoint_slices(std::vector<std::vector<float>>& copies) override {
    return host_->checkpoint_slices(copies);
  }
  void restore(const ShardedCheckpoint& checkpoint) override { host_->restore(checkpoint); }
  std::string describe_memory() const override {
    return host_->describe_memory() + "; the GPU holds two groups of fp32 parameters and gradients at a time";
  }

 private:
  std::unique_ptr<TrainingState> host_;
  DeviceStagedSource source_;
  cudaStream_t stream_;
};

}  // namespace

std::unique_ptr<TrainingState> make_staged_zero3_state(const Config& config, const GptShape& shape,
                                                       Communicator& host_world, cudaStream_t stream) {
  DILATRON_CHECK_INPUT(config.zero.offload_params != OffloadTier::device &&
                           config.zero.offload_optimizer != OffloadTier::device,
                       "zero.offload_params and zero.offload_optimizer: with device: cuda, ZeRO-3 keeps its shards "
                       "in host memory or on NVMe and steps the optimizer on the CPU; set both to cpu or nvme "
                       "(shards in GPU memory are not implemented in this version)");
  return std::make_unique<StagedZero3State>(make_zero3_state(config, shape, host_world), shape, stream);
}

}  // namespace dilatron
#endif
