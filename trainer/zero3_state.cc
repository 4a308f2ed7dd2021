// The ZeRO-3 training state: parameters, gradients and AdamW moments partitioned across the
// world by Zero3Engine, which is also the model's ParameterSource. Every rank contributes its
// own slices to checkpoints and reads back the slices it owns now, whatever the world size of
// the run that wrote them.
#include <fmt/core.h>

#include "trainer/training_state_kinds.h"
#include "zero/host_pool.h"
#include "zero/zero3.h"

namespace dilatron {
namespace {

StorageTier storage_tier(OffloadTier t) {
  switch (t) {
    case OffloadTier::device: return StorageTier::device;
    case OffloadTier::cpu: return StorageTier::cpu;
    case OffloadTier::nvme: return StorageTier::nvme;
  }
  return StorageTier::device;
}

Zero3Options zero3_options(const ZeroConfig& z, int rank, int ranks_on_node) {
  Zero3Options o;
  o.persistence_threshold = z.persistence_threshold;
  o.prefetch_depth = z.prefetch_depth;
  o.params_tier = storage_tier(z.offload_params);
  o.optimizer_tier = storage_tier(z.offload_optimizer);
  // One swap directory per rank: ranks of one node may share zero.nvme_path.
  o.nvme.directory = fmt::format("{}/rank_{:05}", z.nvme_path, rank);
  o.nvme.block_bytes = z.nvme_block_bytes;
  o.nvme.queue_depth = z.nvme_queue_depth;
  o.host_threads = z.host_threads > 0 ? z.host_threads : auto_host_threads(ranks_on_node);
  return o;
}

constexpr const char* kKinds[] = {"params", "adam_m", "adam_v"};

class Zero3State final : public TrainingState {
 public:
  Zero3State(const Config& config, const GptShape& shape, Communicator& world, int ranks_on_node)
      : engine_(shape, world, zero3_options(config.zero, world.rank(), ranks_on_node)) {}

  ParameterSource<float>* parameter_source() override { return &engine_; }
  void attach(Gpt<float>&) override {}

  void init_parameters(uint64_t seed) override { engine_.init_parameters(seed); }
  void zero_gradients() override { engine_.zero_gradients(); }
  // Each group's gradients were reduce-scattered as the backward finished with it.
  void reduce_gradients() override {}
  double gradient_sum_of_squares() override { return engine_.gradient_sum_of_squares(); }
  void scale_gradients(float factor) override { engine_.scale_gradients(factor); }
  void adamw_step(const OptimizerConfig& o, float lr, int64_t step) override {
    engine_.adamw_step(lr, static_cast<float>(o.beta1), static_cast<float>(o.beta2), static_cast<float>(o.eps),
                       static_cast<float>(o.weight_decay), step);
  }

  std::vector<OwnedSlice> checkpoint_slices(std::vector<std::vector<float>>& copies) override {
    std::vector<OwnedSlice> out;
    const auto slices = engine_.owned_logical_slices();
    for (const char* kind : kKinds) {
      const auto resident = engine_.resident_owned(kind);
      if (!resident.empty()) {  // in memory: no copy, so a checkpoint adds nothing to the peak
        for (const auto& r : resident) out.push_back({kind, r.logical_begin, r.length, r.data});
        continue;
      }
      copies.emplace_back();
      engine_.read_owned(kind, copies.back());
      const float* data = copies.back().data();
      for (const auto& s : slices) {
        out.push_back({kind, s.logical_begin, s.length, data});
        data += s.length;
      }
    }
    return out;
  }

  void restore(const ShardedCheckpoint& checkpoint) override {
    const auto slices = engine_.owned_logical_slices();
    int64_t total = 0;
    for (const auto& s : slices) total += s.length;
    std::vector<float> owned(total);
    for (const char* kind : kKinds) {
      float* data = owned.data();
      for (const auto& s : slices) {
        checkpoint.read(kind, s.logical_begin, s.length, data);
        data += s.length;
      }
      engine_.write_owned(kind, owned);
    }
  }

  std::string describe_memory() const override {
    const Zero3Engine::MemoryReport m = engine_.memory();
    const double mib = 1.0 / (1 << 20);
    return fmt::format("ZeRO-3: per rank parameter shards {:.1f} MiB ({}), gradient shards {:.1f} MiB, optimizer "
                       "state {:.1f} MiB ({}), of which replicated groups {:.1f} MiB; on disk {:.1f} MiB; host "
                       "threads {}",
                       m.param_shard_bytes * mib, storage_tier_name(m.params_tier), m.gradient_shard_bytes * mib,
                       m.optimizer_bytes * mib, storage_tier_name(m.optimizer_tier), m.replicated_bytes * mib,
                       m.disk_bytes * mib, engine_.host_threads());
  }

 private:
  Zero3Engine engine_;
};

}  // namespace

std::unique_ptr<TrainingState> make_zero3_state(const Config& config, const GptShape& shape, Communicator& world,
                                                int ranks_on_node) {
  return std::make_unique<Zero3State>(config, shape, world, ranks_on_node);
}

}  // namespace dilatron
