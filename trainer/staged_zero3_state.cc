// ZeRO-3 for the GPU model with host-resident shards (zero.offload_params: cpu or nvme): the
// host engine (zero/zero3.h) keeps the partitioned parameters, gradients and AdamW state and
// runs the optimizer step on the CPU, as ZeRO-Offload does; this state only moves each group
// between the engine's (pinned) buffers and the GPU as the model asks for it:
//   acquire(g):        the engine gathers g (host); a copy stream uploads it to a device slot;
//   gradients_done(g): the copy stream downloads the gradients into the engine's buffer, which
//                      then reduce-scatters them.
//
// Overlap (zero.prefetch_depth >= 1): acquire(g) also starts the upload of the next announced
// group into the other slot, so it runs under g's compute; gradients_done(g) queues g's
// download and only then hands the previous group's gradients to the engine, so its download
// ran under g's backward and the engine's host work (reduce-scatter, accumulation) runs while
// the GPU still has g's backward queued. Engine calls stay in the model's schedule order on
// every rank (their collectives must match); only the waits on copies move. With
// zero.prefetch_depth 0 every copy is waited for at once (the serial baseline).
//
// Device memory: a slot for group 0 (held from the LM head to the embedding backward) and two
// for the other groups, for the parameters and for the gradients: at most six groups whatever
// the model size. transfer_ms() reports the copy stream's busy time, to measure how much of it
// the compute hides.
#ifdef DILATRON_CUDA
#include <algorithm>
#include <deque>

#include <fmt/core.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "trainer/training_state_kinds.h"

namespace dilatron {
namespace {

class DeviceStagedSource final : public ParameterSource<float> {
 public:
  DeviceStagedSource(ParameterSource<float>& host, const GptShape& shape, int prefetch_depth, cudaStream_t stream)
      : host_(host), stream_(stream), overlap_(prefetch_depth > 0), numel_(gpt_group_offsets(shape).group_numel) {
    const int64_t largest_other = *std::max_element(numel_.begin() + 1, numel_.end());
    for (Slot* slots : {params_, grads_}) {
      slots[0].buffer = Tensor::empty({numel_[0]}, DType::f32, Device::cuda);
      for (int i = 1; i < kSlots; ++i) slots[i].buffer = Tensor::empty({largest_other}, DType::f32, Device::cuda);
      for (int i = 0; i < kSlots; ++i) {
        DILATRON_CUDA_CHECK(cudaEventCreateWithFlags(&slots[i].done, cudaEventDisableTiming));
        DILATRON_CUDA_CHECK(cudaEventCreateWithFlags(&slots[i].free, cudaEventDisableTiming));
      }
    }
    DILATRON_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  }
  ~DeviceStagedSource() override {
    cudaStreamSynchronize(copy_stream_);
    for (Slot* slots : {params_, grads_})
      for (int i = 0; i < kSlots; ++i) {
        cudaEventDestroy(slots[i].done);
        cudaEventDestroy(slots[i].free);
      }
    for (Timed& t : timed_) {
      cudaEventDestroy(t.start);
      cudaEventDestroy(t.stop);
    }
    cudaStreamDestroy(copy_stream_);
  }

  const float* acquire(int group) override {
    check_group(group, "acquire");
    if (!upcoming_.empty() && upcoming_.front() == group)
      upcoming_.pop_front();
    else
      upcoming_.clear();
    Slot* slot = find(params_, group);
    if (slot == nullptr) slot = &upload(group);
    DILATRON_CHECK(!slot->held, "acquire of group {}, which is already acquired", group);
    slot->held = true;
    DILATRON_CUDA_CHECK(cudaStreamWaitEvent(stream_, slot->done));
    if (!overlap_) finish_upload(*slot);
    // The next group's upload runs under this group's compute.
    if (overlap_ && !upcoming_.empty() && find(params_, upcoming_.front()) == nullptr &&
        free_slot(params_, upcoming_.front()) != nullptr)
      upload(upcoming_.front());
    return slot->data();
  }
  void release(int group) override {
    Slot* slot = find(params_, group);
    DILATRON_CHECK(slot != nullptr && slot->held, "release of group {}, which is not held", group);
    finish_upload(*slot);  // long done: the compute waited for it
    slot->held = false;
    slot->group = -1;
    DILATRON_CUDA_CHECK(cudaEventRecord(slot->free, stream_));  // the next upload waits for this group's compute
  }

  float* acquire_gradients(int group) override {
    check_group(group, "acquire_gradients");
    // The group's gradients of the last micro-batch may still be on their way to the engine.
    while (Slot* previous = find(grads_, group)) {
      DILATRON_CHECK(!previous->held, "acquire_gradients of group {} twice without gradients_done", group);
      finish_oldest_download();
    }
    Slot* slot = free_slot(grads_, group);
    if (slot == nullptr) {  // the slot's previous group is still on its way to the engine
      finish_oldest_download();
      slot = free_slot(grads_, group);
    }
    DILATRON_CHECK(slot != nullptr, "no free gradient slot for group {}", group);
    slot->group = group;
    slot->held = true;
    DILATRON_CUDA_CHECK(cudaStreamWaitEvent(stream_, slot->done));  // its last download has read it
    DILATRON_CUDA_CHECK(cudaMemsetAsync(slot->data(), 0, numel_[group] * sizeof(float), stream_));
    return slot->data();
  }
  void gradients_done(int group) override {
    Slot* slot = find(grads_, group);
    DILATRON_CHECK(slot != nullptr && slot->held, "gradients_done of group {} without acquire_gradients", group);
    slot->held = false;
    // The engine's buffer starts at zero, so writing the group's gradients is adding them.
    float* host = host_.acquire_gradients(group);
    DILATRON_CUDA_CHECK(cudaEventRecord(slot->free, stream_));
    DILATRON_CUDA_CHECK(cudaStreamWaitEvent(copy_stream_, slot->free));
    copy(host, slot->data(), group, cudaMemcpyDeviceToHost);
    DILATRON_CUDA_CHECK(cudaEventRecord(slot->done, copy_stream_));
    downloads_.push_back(slot);
    if (!overlap_ || downloads_.size() > 1) finish_oldest_download();
  }
  void will_acquire(int group) override {
    host_.will_acquire(group);
    upcoming_.push_back(group);
  }

  // Hands every gradient still on its way to the engine; before the engine reduces.
  void drain() {
    while (!downloads_.empty()) finish_oldest_download();
  }
  // Milliseconds the copy stream spent on uploads and downloads since the last call.
  double transfer_ms() {
    double total = 0;
    for (Timed& t : timed_) {
      if (!t.pending) continue;
      DILATRON_CUDA_CHECK(cudaEventSynchronize(t.stop));
      float ms = 0;
      DILATRON_CUDA_CHECK(cudaEventElapsedTime(&ms, t.start, t.stop));
      total += ms;
      t.pending = false;
    }
    return total;
  }

 private:
  static constexpr int kSlots = 3;  // [0] for group 0, [1] and [2] for the others
  struct Slot {
    Tensor buffer;
    int group = -1;      // the group it holds (or is uploading / downloading), or -1
    bool held = false;   // by the model
    bool uploading = false;  // params: the engine's buffer is still lent to the copy
    cudaEvent_t done = nullptr;  // the copy stream's last copy of this slot
    cudaEvent_t free = nullptr;  // the compute stream is done with it
    float* data() const { return buffer.data<float>(); }
  };
  struct Timed {
    cudaEvent_t start, stop;
    bool pending = false;
  };

  void check_group(int group, const char* what) const {
    DILATRON_CHECK(group >= 0 && group < static_cast<int>(numel_.size()), "{} of group {} outside [0, {})", what,
                   group, numel_.size());
  }
  static Slot* find(Slot* slots, int group) {
    for (int i = 0; i < kSlots; ++i)
      if (slots[i].group == group) return &slots[i];
    return nullptr;
  }
  static Slot* free_slot(Slot* slots, int group) {
    if (group == 0) return slots[0].group < 0 ? &slots[0] : nullptr;
    for (int i = 1; i < kSlots; ++i)
      if (slots[i].group < 0) return &slots[i];
    return nullptr;
  }

  Slot& upload(int group) {
    Slot* slot = free_slot(params_, group);
    DILATRON_CHECK(slot != nullptr, "no free parameter slot for group {}", group);
    slot->group = group;
    slot->uploading = true;
    const float* host = host_.acquire(group);
    DILATRON_CUDA_CHECK(cudaStreamWaitEvent(copy_stream_, slot->free));  // its last group's compute is over
    copy(slot->data(), host, group, cudaMemcpyHostToDevice);
    DILATRON_CUDA_CHECK(cudaEventRecord(slot->done, copy_stream_));
    return *slot;
  }
  // The engine's gathered buffer goes back once the upload has read it.
  void finish_upload(Slot& slot) {
    if (!slot.uploading) return;
    DILATRON_CUDA_CHECK(cudaEventSynchronize(slot.done));
    host_.release(slot.group);
    slot.uploading = false;
  }
  void finish_oldest_download() {
    Slot* slot = downloads_.front();
    downloads_.pop_front();
    DILATRON_CUDA_CHECK(cudaEventSynchronize(slot->done));
    host_.gradients_done(slot->group);
    slot->group = -1;
  }
  void copy(float* dst, const float* src, int group, cudaMemcpyKind kind) {
    Timed& t = next_timed();
    DILATRON_CUDA_CHECK(cudaEventRecord(t.start, copy_stream_));
    DILATRON_CUDA_CHECK(cudaMemcpyAsync(dst, src, numel_[group] * sizeof(float), kind, copy_stream_));
    DILATRON_CUDA_CHECK(cudaEventRecord(t.stop, copy_stream_));
  }
  Timed& next_timed() {
    for (Timed& t : timed_)
      if (!t.pending) return t.pending = true, t;
    Timed t;
    DILATRON_CUDA_CHECK(cudaEventCreate(&t.start));
    DILATRON_CUDA_CHECK(cudaEventCreate(&t.stop));
    t.pending = true;
    timed_.push_back(t);
    return timed_.back();
  }

  ParameterSource<float>& host_;
  cudaStream_t stream_, copy_stream_ = nullptr;
  bool overlap_;
  std::vector<int64_t> numel_;
  Slot params_[kSlots], grads_[kSlots];
  std::deque<int> upcoming_;
  std::deque<Slot*> downloads_;  // gradients queued for the engine, oldest first
  std::deque<Timed> timed_;  // deque: references stay valid as it grows
};

class StagedZero3State final : public TrainingState {
 public:
  StagedZero3State(std::unique_ptr<TrainingState> host, const GptShape& shape, int prefetch_depth,
                   cudaStream_t stream)
      : host_(std::move(host)),
        source_(*host_->parameter_source(), shape, prefetch_depth, stream),
        stream_(stream) {}

  ParameterSource<float>* parameter_source() override { return &source_; }
  void attach(Gpt<float>&) override {
    DILATRON_CHECK(false, "the GPU training state serves the GPU model, not the CPU one");
  }
  void init_parameters(uint64_t seed) override { host_->init_parameters(seed); }
  void zero_gradients() override { host_->zero_gradients(); }
  void reduce_gradients() override {
    source_.drain();
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
    transfer_ms_ += source_.transfer_ms();
    host_->reduce_gradients();
  }
  void add_step_metrics(nlohmann::json& row) override {
    row["offload_transfer_ms"] = transfer_ms_;
    transfer_ms_ = 0;
  }
  double gradient_sum_of_squares() override { return host_->gradient_sum_of_squares(); }
  void scale_gradients(float factor) override { host_->scale_gradients(factor); }
  void adamw_step(const OptimizerConfig& o, float lr, int64_t step) override { host_->adamw_step(o, lr, step); }
  std::vector<OwnedSlice> checkpoint_slices(std::vector<std::vector<float>>& copies) override {
    return host_->checkpoint_slices(copies);
  }
  void restore(const ShardedCheckpoint& checkpoint) override { host_->restore(checkpoint); }
  std::string describe_memory() const override {
    return host_->describe_memory() + "; the GPU holds three groups of fp32 parameters and three of gradients";
  }

 private:
  std::unique_ptr<TrainingState> host_;
  DeviceStagedSource source_;
  cudaStream_t stream_;
  double transfer_ms_ = 0;  // the copy stream's busy time since the last metrics row
};

}  // namespace

std::unique_ptr<TrainingState> make_staged_zero3_state(const Config& config, const GptShape& shape,
                                                       Communicator& host_world, int ranks_on_node,
                                                       cudaStream_t stream) {
  return std::make_unique<StagedZero3State>(make_zero3_state(config, shape, host_world, ranks_on_node), shape,
                                            config.zero.prefetch_depth, stream);
}

}  // namespace dilatron
#endif
