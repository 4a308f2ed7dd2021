// The device and cpu tiers: every piece resident in one 64-byte-aligned host arena; reads and
// writes are memcpy and complete at once. In a CUDA build the cpu tier's arena is pinned
// (cudaHostAlloc) when a CUDA device is present, so host-device copies can be asynchronous.
// On a machine without a GPU (this one) both tiers are plain host memory, and they differ only
// in which tier memory_bytes() is accounted to.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "zero/shard_store.h"

namespace dilatron {

class MemoryShardStore final : public ShardStore {
 public:
  MemoryShardStore(StorageTier tier, std::vector<int64_t> piece_elements);  // tier: device or cpu

  StorageTier tier() const override { return tier_; }
  int pieces() const override { return static_cast<int>(elements_.size()); }
  int64_t piece_elements(int piece) const override;
  float* resident(int piece) override;
  IoTicket read_async(int piece, float* dst) override;
  IoTicket write_async(int piece, const float* src) override;
  int64_t memory_bytes() const override { return arena_bytes_; }
  int64_t disk_bytes() const override { return 0; }

 private:
  StorageTier tier_;
  std::vector<int64_t> elements_;
  std::vector<int64_t> offsets_;  // in floats; each piece starts 64-byte aligned
  int64_t arena_bytes_ = 0;
  std::unique_ptr<float, void (*)(float*)> arena_;
};

}  // namespace dilatron
