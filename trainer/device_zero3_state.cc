// ZeRO-3 with every shard in GPU memory (zero.stage 3 with zero.offload_params and
// zero.offload_optimizer: device, on a GPU run): the partition of zero/zero3_layout.h, the same
// as the host engine's, so both write the same checkpoints. Each rank keeps its fp32 slices of
// the parameters, gradients and both AdamW moments on its GPU; the model's groups are gathered
// into pooled full buffers by the device communicator, and the optimizer, norm and scaling run
// on the device over the shards.
//
// Overlap. The device communicator runs each collective on its own stream (NcclCommunicator),
// ordered after the work queued on the compute stream when it is issued, and a request's wait()
// makes the compute stream, not the host, wait. So:
//   - acquire(g) waits for g's gather and issues the gathers of the next zero.prefetch_depth
//     announced groups, which run while g computes;
//   - gradients_done(g) issues g's reduce-scatter and only then finishes the previous group's
//     (accumulating it into the gradient shard), so each reduce-scatter runs under the next
//     group's backward.
// The MPI communicator (ranks sharing a GPU) is correct here too but synchronises at each
// operation, so it overlaps nothing.
//
// Every collective is issued in the model's schedule order, the same on every rank.
#ifdef DILATRON_CUDA
#include <algorithm>
#include <deque>

#include <fmt/core.h>

#include "core/check.h"
#include "core/cuda_check.h"
#include "model/layers_cuda.h"
#include "optim/adamw.h"
#include "optim/grad_norm.h"
#include "trainer/training_state_kinds.h"
#include "zero/zero3_layout.h"

namespace dilatron {
namespace {

// Device buffers of one size, reused across groups: after the first step nothing is allocated.
class DeviceBufferPool {
 public:
  explicit DeviceBufferPool(int64_t elements) : elements_(elements) {}
  float* take() {
    if (free_.empty()) {
      all_.push_back(Tensor::empty({std::max<int64_t>(elements_, 1)}, DType::f32, Device::cuda));
      free_.push_back(all_.back().data<float>());
    }
    float* buffer = free_.back();
    free_.pop_back();
    return buffer;
  }
  void give(float* buffer) { free_.push_back(buffer); }
  int64_t bytes_allocated() const { return static_cast<int64_t>(all_.size()) * elements_ * 4; }

 private:
  int64_t elements_;
  std::vector<Tensor> all_;
  std::vector<float*> free_;
};

std::vector<AdamWSegment> shard_segments(const std::vector<Zero3GroupLayout>& layout) {
  std::vector<AdamWSegment> segments;
  for (const Zero3GroupLayout& grp : layout)
    for (const Zero3Segment& s : grp.segments)
      segments.push_back({grp.shard_offset + s.piece_offset, s.length, s.weight_decay});
  return segments;
}

int64_t largest(const std::vector<Zero3GroupLayout>& layout, int64_t Zero3GroupLayout::*field) {
  int64_t most = 0;
  for (const Zero3GroupLayout& grp : layout) most = std::max(most, grp.*field);
  return most;
}

class DeviceZero3State final : public TrainingState, public ParameterSource<float> {
 public:
  DeviceZero3State(const Config& config, const GptShape& shape, Communicator& host_world,
                   Communicator& device_world, cudaStream_t stream)
      : shape_(shape),
        layout_(zero3_layout(shape, device_world.size(), device_world.rank(), config.zero.persistence_threshold)),
        groups_(layout_.size()),
        host_world_(host_world),
        world_(device_world),
        stream_(stream),
        prefetch_depth_(config.zero.prefetch_depth),
        n_(zero3_shard_elements(layout_)),
        params_(Tensor::zeros({std::max<int64_t>(n_, 1)}, DType::f32, Device::cuda)),
        grads_(Tensor::zeros({std::max<int64_t>(n_, 1)}, DType::f32, Device::cuda)),
        adam_m_(Tensor::zeros({std::max<int64_t>(n_, 1)}, DType::f32, Device::cuda)),
        adam_v_(Tensor::zeros({std::max<int64_t>(n_, 1)}, DType::f32, Device::cuda)),
        adamw_segments_(shard_segments(layout_)),
        full_pool_(largest(layout_, &Zero3GroupLayout::padded)),
        scatter_pool_(largest(layout_, &Zero3GroupLayout::local)) {
    DILATRON_CHECK_INPUT(prefetch_depth_ >= 0, "zero.prefetch_depth must be >= 0, got {}", prefetch_depth_);
  }

  ~DeviceZero3State() override {
    // Collectives in flight write into pool buffers: let them finish before the pools go.
    for (Group& g : groups_) g.gather.wait();
    for (PendingReduce& p : pending_) p.request.wait();
  }

  // TrainingState.
  ParameterSource<float>* parameter_source() override { return this; }
  void attach(Gpt<float>&) override {
    DILATRON_CHECK(false, "the GPU training state serves the GPU model, not the CPU one");
  }
  void init_parameters(uint64_t seed) override {
    drop_gathered();
    std::vector<float> host(static_cast<size_t>(n_));
    for (size_t g = 0; g < layout_.size(); ++g)
      zero3_init_piece(shape_, layout_[g], static_cast<int>(g), seed, host.data() + layout_[g].shard_offset);
    upload(params_, host);
    for (Tensor* t : {&adam_m_, &adam_v_}) DILATRON_CUDA_CHECK(cudaMemsetAsync(t->raw(), 0, n_ * 4, stream_));
  }
  void zero_gradients() override {
    for (const Group& g : groups_)
      DILATRON_CHECK(g.grad_buffer == nullptr, "zero_gradients while the model holds a gradient buffer");
    DILATRON_CUDA_CHECK(cudaMemsetAsync(grads_.raw(), 0, n_ * 4, stream_));
  }
  void reduce_gradients() override {
    while (!pending_.empty()) finish_oldest_reduce();
  }
  double gradient_sum_of_squares() override {
    double sum = 0;
    for (const Zero3GroupLayout& grp : layout_)
      // A replica is counted once, by rank 0; padding holds zeros.
      if (grp.local > 0 && (!grp.replicated || world_.rank() == 0))
        sum += sum_of_squares_cuda(grads() + grp.shard_offset, grp.local, stream_);
    host_world_.all_reduce(&sum, 1, DType::f64, ReduceOp::sum);
    return sum;
  }
  void scale_gradients(float factor) override {
    if (n_ > 0) scale_cuda(grads(), n_, factor, stream_);
  }
  void adamw_step(const OptimizerConfig& o, float lr, int64_t step) override {
    drop_gathered();  // the gathered copies are stale after the update
    const AdamWStep s{lr, static_cast<float>(o.beta1), static_cast<float>(o.beta2), static_cast<float>(o.eps),
                      static_cast<float>(o.weight_decay), step};
    adamw_update_segments_cuda(params_.data<float>(), grads(), adam_m_.data<float>(), adam_v_.data<float>(),
                               adamw_segments_, s, stream_);
  }

  std::vector<OwnedSlice> checkpoint_slices(std::vector<std::vector<float>>& copies) override {
    copies.reserve(3);
    std::vector<OwnedSlice> slices;
    for (auto [kind, device] : kinds()) {
      copies.push_back(download(*device));
      for (const Zero3GroupLayout& grp : layout_)
        if (grp.owned_hi > grp.owned_lo)
          slices.push_back({kind, grp.begin + grp.local_begin + grp.owned_lo, grp.owned_hi - grp.owned_lo,
                            copies.back().data() + grp.shard_offset + grp.owned_lo});
    }
    return slices;
  }
  void restore(const ShardedCheckpoint& checkpoint) override {
    drop_gathered();
    for (auto [kind, device] : kinds()) {
      std::vector<float> host(static_cast<size_t>(n_), 0.0f);  // padding stays 0
      for (const Zero3GroupLayout& grp : layout_) {
        // Every rank reads its slice of a partitioned group and the whole of a replicated one.
        const int64_t length = std::max<int64_t>(0, std::min(grp.local, grp.numel - grp.local_begin));
        if (length > 0) checkpoint.read(kind, grp.begin + grp.local_begin, length, host.data() + grp.shard_offset);
      }
      upload(*device, host);
    }
  }

  std::string describe_memory() const override {
    const double mib = 1.0 / (1 << 20);
    return fmt::format("ZeRO-3 on the GPU over {} ranks: per rank parameter and gradient shards {:.1f} MiB each, "
                       "optimizer state {:.1f} MiB, gathered-group buffers {:.1f} MiB so far, all fp32 in GPU "
                       "memory",
                       world_.size(), 4 * n_ * mib, 8 * n_ * mib,
                       (full_pool_.bytes_allocated() + scatter_pool_.bytes_allocated()) * mib);
  }

  // ParameterSource<float>.
  const float* acquire(int group) override {
    Group& g = group_at(group, "acquire");
    DILATRON_CHECK(!g.held, "acquire of group {}, which is already acquired (release it first)", group);
    // Off the announced schedule: the rest of the announcement is stale.
    if (!upcoming_.empty() && upcoming_.front() == group)
      upcoming_.pop_front();
    else
      upcoming_.clear();
    if (g.gathered == nullptr) start_gather(group);
    g.gather.wait();  // the compute stream waits, not the host
    g.held = true;
    prefetch();
    return g.gathered;
  }
  void release(int group) override {
    Group& g = group_at(group, "release");
    DILATRON_CHECK(g.held, "release of group {}, which is not acquired", group);
    g.held = false;
    full_pool_.give(g.gathered);
    g.gathered = nullptr;
  }
  float* acquire_gradients(int group) override {
    Group& g = group_at(group, "acquire_gradients");
    DILATRON_CHECK(g.grad_buffer == nullptr, "acquire_gradients of group {} twice without gradients_done", group);
    g.grad_buffer = full_pool_.take();
    // Padding included: it reduce-scatters as 0.
    DILATRON_CUDA_CHECK(cudaMemsetAsync(g.grad_buffer, 0, layout_[group].padded * 4, stream_));
    return g.grad_buffer;
  }
  void gradients_done(int group) override {
    Group& g = group_at(group, "gradients_done");
    DILATRON_CHECK(g.grad_buffer != nullptr, "gradients_done of group {} without acquire_gradients", group);
    const Zero3GroupLayout& grp = layout_[group];
    PendingReduce p{group, g.grad_buffer, nullptr, {}};
    g.grad_buffer = nullptr;
    if (grp.replicated) {
      p.summed = p.full;
      if (world_.size() > 1) p.request = world_.all_reduce_async(p.full, grp.numel, DType::f32, ReduceOp::sum);
    } else {
      p.summed = scatter_pool_.take();
      p.request = world_.reduce_scatter_async(p.full, p.summed, grp.local, DType::f32, ReduceOp::sum);
    }
    pending_.push_back(std::move(p));
    // Finish the previous group's reduction only now, so it ran under this group's backward.
    if (pending_.size() > 1) finish_oldest_reduce();
  }
  void will_acquire(int group) override {
    group_at(group, "will_acquire");
    upcoming_.push_back(group);
  }

 private:
  struct Group {
    float* gathered = nullptr;  // pool buffer from the start of its gather to release
    CommRequest gather;
    bool held = false;
    float* grad_buffer = nullptr;  // between acquire_gradients and gradients_done
  };
  struct PendingReduce {
    int group;
    float* full;    // the model's gradients of the group (pool buffer)
    float* summed;  // where the reduction lands: the local slice (partitioned) or `full` (replicated)
    CommRequest request;
  };

  float* grads() { return grads_.data<float>(); }

  Group& group_at(int group, const char* what) {
    DILATRON_CHECK(group >= 0 && group < static_cast<int>(groups_.size()), "{} of group {} outside [0, {})", what,
                   group, groups_.size());
    return groups_[group];
  }

  void start_gather(int group) {
    const Zero3GroupLayout& grp = layout_[group];
    Group& g = groups_[group];
    g.gathered = full_pool_.take();
    const float* shard = params_.data<float>() + grp.shard_offset;
    if (grp.replicated)
      DILATRON_CUDA_CHECK(
          cudaMemcpyAsync(g.gathered, shard, grp.numel * 4, cudaMemcpyDeviceToDevice, stream_));
    else
      g.gather = world_.all_gather_async(shard, g.gathered, grp.local, DType::f32);
  }

  void prefetch() {
    const size_t ahead = std::min(upcoming_.size(), static_cast<size_t>(prefetch_depth_));
    for (size_t i = 0; i < ahead; ++i)
      if (groups_[upcoming_[i]].gathered == nullptr) start_gather(upcoming_[i]);
  }

  void finish_oldest_reduce() {
    PendingReduce p = std::move(pending_.front());
    pending_.pop_front();
    p.request.wait();
    const Zero3GroupLayout& grp = layout_[p.group];
    residual_forward(grads() + grp.shard_offset, p.summed, grp.local, stream_);  // shard += summed
    if (p.summed != p.full) scatter_pool_.give(p.summed);
    full_pool_.give(p.full);
  }

  // Gathers prefetched or in flight are dropped; no group may be held.
  void drop_gathered() {
    reduce_gradients();
    for (size_t i = 0; i < groups_.size(); ++i) {
      Group& g = groups_[i];
      DILATRON_CHECK(!g.held && g.grad_buffer == nullptr,
                     "group {} is still acquired by the model: parameters cannot change under it", i);
      if (g.gathered == nullptr) continue;
      g.gather.wait();
      full_pool_.give(g.gathered);
      g.gathered = nullptr;
    }
    upcoming_.clear();
  }

  std::vector<std::pair<const char*, Tensor*>> kinds() {
    return {{"params", &params_}, {"adam_m", &adam_m_}, {"adam_v", &adam_v_}};
  }
  std::vector<float> download(const Tensor& device) {
    std::vector<float> host(static_cast<size_t>(n_));
    DILATRON_CUDA_CHECK(cudaMemcpyAsync(host.data(), device.raw(), n_ * 4, cudaMemcpyDeviceToHost, stream_));
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return host;
  }
  void upload(Tensor& device, const std::vector<float>& host) {
    DILATRON_CUDA_CHECK(cudaMemcpyAsync(device.raw(), host.data(), n_ * 4, cudaMemcpyHostToDevice, stream_));
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  GptShape shape_;
  std::vector<Zero3GroupLayout> layout_;
  std::vector<Group> groups_;
  Communicator& host_world_;
  Communicator& world_;
  cudaStream_t stream_;
  int prefetch_depth_;
  int64_t n_;  // shard elements of this rank
  Tensor params_, grads_, adam_m_, adam_v_;
  AdamWSegmentTable adamw_segments_;
  DeviceBufferPool full_pool_, scatter_pool_;
  std::deque<int> upcoming_;
  std::deque<PendingReduce> pending_;
};

}  // namespace

std::unique_ptr<TrainingState> make_device_zero3_state(const Config& config, const GptShape& shape,
                                                       Communicator& host_world, Communicator& device_world,
                                                       cudaStream_t stream) {
  return std::make_unique<DeviceZero3State>(config, shape, host_world, device_world, stream);
}

}  // namespace dilatron
#endif
