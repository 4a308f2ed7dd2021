#include "zero/shard_store.h"

#include <algorithm>
#include <cstdlib>

#include "core/check.h"
#include "zero/memory_shard_store.h"
#include "zero/nvme_engine.h"
#include "zero/nvme_shard_store.h"

namespace dilatron {

const char* storage_tier_name(StorageTier tier) {
  switch (tier) {
    case StorageTier::device: return "device";
    case StorageTier::cpu: return "cpu";
    case StorageTier::nvme: return "nvme";
  }
  return "unknown";
}

std::unique_ptr<ShardStore> make_shard_store(StorageTier tier, std::vector<int64_t> piece_elements,
                                             const NvmeOptions& nvme) {
  for (size_t i = 0; i < piece_elements.size(); ++i)
    DILATRON_CHECK(piece_elements[i] >= 0, "piece {} has {} elements", i, piece_elements[i]);
  if (tier == StorageTier::nvme) return std::make_unique<NvmeShardStore>(std::move(piece_elements), nvme);
  return std::make_unique<MemoryShardStore>(tier, std::move(piece_elements));
}

std::shared_ptr<float> allocate_io_buffer(int64_t elements) {
  DILATRON_CHECK(elements >= 0, "{} elements", elements);
  int64_t bytes = (elements * static_cast<int64_t>(sizeof(float)) + kIoAlignment - 1) / kIoAlignment * kIoAlignment;
  // aligned_alloc(…, 0) may return nullptr: one block keeps empty buffers valid and distinct.
  void* p = std::aligned_alloc(kIoAlignment, static_cast<size_t>(std::max(bytes, kIoAlignment)));
  DILATRON_CHECK(p != nullptr, "cannot allocate an I/O buffer of {} bytes", bytes);
  return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
}

}  // namespace dilatron
