// ZeRO stage 3 on the CPU: parameters, gradients and AdamW state partitioned over every rank of
// the world, the model's parameter groups all-gathered on demand (docs/zero.md).
//
// The partition is zero/zero3_layout.h: each group one flat bucket padded to a multiple of W,
// rank r storing its slice of the parameters, the gradients and both Adam moments; a group
// below persistence_threshold elements stays replicated on every rank (gradients all-reduced,
// every rank updates its replica alike).
//
// As the model's ParameterSource: acquire(g) waits for (or starts and waits for) the
// all-gather of g into a pooled full buffer and starts the gathers of the next prefetch_depth
// groups the model announced with will_acquire; release(g) returns the buffer;
// acquire_gradients(g) hands out a zeroed full buffer; gradients_done(g) reduce-scatters it
// (sum) into this rank's gradient shard (+=, micro-batches add up). On a world of one rank the
// gathers and reduce-scatters are plain copies and additions, done without the communicator.
//
// The element-wise and reduction work on the host (copies, zeroing, accumulation, the gradient
// norm, scaling, AdamW) runs on a pool of Zero3Options::host_threads threads, in fixed chunks,
// so its results are the same bits whatever the thread count.
//
// Every collective is issued in the order of the model's schedule, the same on every rank:
// all ranks must run the same number of forward/backward passes.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "model/gpt.h"
#include "model/parameter_source.h"
#include "optim/adamw.h"
#include "zero/host_pool.h"
#include "zero/residency.h"
#include "zero/shard_store.h"
#include "zero/zero3_layout.h"

namespace dilatron {

struct Zero3Options {
  int64_t persistence_threshold = 0;  // groups with fewer elements stay replicated
  int prefetch_depth = 1;             // gathers started ahead of the model
  StorageTier params_tier = StorageTier::device, optimizer_tier = StorageTier::device;
  // nvme tiers: this rank's swap directory; the engine uses subdirectories params/, adam_m/, adam_v/.
  NvmeOptions nvme;
  // Threads of the engine's host work (zero/host_pool.h); the results do not depend on it.
  int host_threads = 1;
};

class Zero3Engine final : public ParameterSource<float> {
 public:
  // `world` must outlive the engine. Collective only in what it calls later.
  Zero3Engine(const GptShape& shape, Communicator& world, const Zero3Options& options);
  ~Zero3Engine() override;
  Zero3Engine(const Zero3Engine&) = delete;
  Zero3Engine& operator=(const Zero3Engine&) = delete;

  // Each element is gpt_init_params' value for (seed, name, index): independent of W.
  // Adam moments are zeroed.
  void init_parameters(uint64_t seed);
  void zero_gradients();
  // Sum of squares of the whole (logical) gradient, all-reduced over the world.
  double gradient_sum_of_squares();
  void scale_gradients(float factor);
  // AdamW on this rank's shard (weight decay only on elements of weight_decay parameters),
  // streaming parameter and moment pieces through buffers for the tiers that need it.
  // No group may be acquired; gathered copies are dropped (they are stale afterwards).
  void adamw_step(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step);

  // Checkpoints, in logical coordinates (ParamSpec offsets, no padding). The slices of all
  // ranks partition [0, num_params): a partitioned group's slice of its owner, replicated
  // groups on rank 0. Sorted, adjacent slices merged.
  using Slice = Zero3Slice;
  std::vector<Slice> owned_logical_slices() const;
  // kind: "params", "adam_m" or "adam_v"; the concatenation over owned_logical_slices().
  void read_owned(const std::string& kind, std::vector<float>& out) const;
  // The same slices in place, unmerged (one per group), for tiers that keep shards in memory;
  // empty for nvme, whose shards only read_owned can copy in. Valid until the next update.
  struct ResidentSlice {
    int64_t logical_begin, length;
    const float* data;
  };
  std::vector<ResidentSlice> resident_owned(const std::string& kind) const;
  // The inverse, for resume. Collective over the world: rank 0 then broadcasts the replicated
  // groups so every replica agrees.
  void write_owned(const std::string& kind, const std::vector<float>& in);

  // Bytes per rank. Shards count wherever their tier keeps them (disk_bytes says how much of
  // it is on disk): param and gradient shards 4 x sum_g local_g, optimizer 8 x sum_g local_g,
  // with local_g = ceil(numel_g / W) for a partitioned group and numel_g for a replicated one;
  // replicated_bytes = 16 x sum of replicated numel_g (params, grads, m, v; included above).
  // gathered_peak_bytes: the most full-bucket buffers ever out at once x the largest bucket.
  struct MemoryReport {
    int64_t param_shard_bytes, gradient_shard_bytes, optimizer_bytes, gathered_peak_bytes, replicated_bytes;
    int64_t disk_bytes;
    StorageTier params_tier, optimizer_tier;
  };
  MemoryReport memory() const;

  // ParameterSource<float>.
  const float* acquire(int group) override;
  void release(int group) override;
  float* acquire_gradients(int group) override;
  void gradients_done(int group) override;
  void will_acquire(int group) override;

  int num_groups() const { return static_cast<int>(groups_.size()); }
  int host_threads() const { return pool_->threads(); }
  bool replicated(int group) const;
  Residency residency(int group) const;

 private:
  // The partition (zero/zero3_layout.h) plus what the engine tracks per group.
  struct Group : Zero3GroupLayout {
    ResidencyState state;
    bool held = false;           // acquired by the model
    float* gathered = nullptr;   // pool buffer while in_flight or available
    float* staging = nullptr;    // nvme: the shard read for the gather in flight
    CommRequest gather;
    float* grad_buffer = nullptr;  // between acquire_gradients and gradients_done
    // The segments cut at the multiples of kHostChunkElements: the AdamW step's tasks.
    std::vector<AdamWChunk> update_chunks;
  };
  // Full-size (or shard-size) buffers reused across groups, I/O-aligned for the nvme tier.
  class BufferPool {
   public:
    explicit BufferPool(int64_t elements) : elements_(elements) {}
    float* take();
    void give(float* buffer);
    int peak() const { return peak_; }
    int64_t elements() const { return elements_; }

   private:
    int64_t elements_;
    std::vector<std::shared_ptr<float>> all_;
    std::vector<float*> free_;
    int out_ = 0, peak_ = 0;
  };

  Group& group_at(int group, const char* what);
  const Group& group_at(int group, const char* what) const;
  ShardStore& store(const std::string& kind) const;
  void start_gather(int g);
  void finish_gather(int g);
  void prefetch();
  // Waits for every gather and frees every gathered buffer; no group may be held.
  void drop_gathered();
  // Piece g of `s` in memory: the resident piece, or read into `buffer` (waited).
  static float* load_piece(ShardStore& s, int g, float* buffer);
  static void store_piece(ShardStore& s, int g, float* data);

  GptShape shape_;
  Communicator& world_;
  Zero3Options options_;
  std::vector<Group> groups_;
  std::unique_ptr<ShardStore> params_, adam_m_, adam_v_;
  std::vector<float> grad_shard_;  // every group's local gradient piece, back to back
  std::vector<float> scatter_out_;  // (largest local) reduce-scatter result before +=; W > 1 only
  std::unique_ptr<BufferPool> full_pool_;   // largest padded bucket
  std::unique_ptr<BufferPool> piece_pool_;  // largest local piece (nvme reads, checkpoints)
  std::deque<int> upcoming_;  // the model's announced acquisitions, in order
  std::unique_ptr<HostPool> pool_;
};

}  // namespace dilatron
