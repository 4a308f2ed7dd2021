#include "zero/shard_store.h"

#include <algorithm>
#include <cstdlib>

#include "core/check.h"
#include "zero/memory_shard_store.h"
#include "zero/nvme_engine.h"
#include "zero/nvme_shard_store.h"
#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#endif

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

bool pin_host_buffers() {
#ifdef DILATRON_CUDA
  // No driver or no GPU: pinning has nothing to serve, and plain host memory is used.
  static const bool gpu = [] {
    int count = 0;
    const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
    (void)cudaGetLastError();  // leave no error behind for the caller's next check
    return ok;
  }();
  return gpu;
#else
  return false;
#endif
}

std::shared_ptr<float> allocate_io_buffer(int64_t elements) {
  DILATRON_CHECK(elements >= 0, "{} elements", elements);
  int64_t bytes = (elements * static_cast<int64_t>(sizeof(float)) + kIoAlignment - 1) / kIoAlignment * kIoAlignment;
#ifdef DILATRON_CUDA
  if (pin_host_buffers()) {
    // Page-aligned, so O_DIRECT takes it as well.
    void* p = nullptr;
    DILATRON_CUDA_CHECK(cudaHostAlloc(&p, static_cast<size_t>(std::max(bytes, kIoAlignment)), cudaHostAllocDefault));
    return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { cudaFreeHost(q); });
  }
#endif
  // aligned_alloc(…, 0) may return nullptr: one block keeps empty buffers valid and distinct.
  void* p = std::aligned_alloc(kIoAlignment, static_cast<size_t>(std::max(bytes, kIoAlignment)));
  DILATRON_CHECK(p != nullptr, "cannot allocate an I/O buffer of {} bytes", bytes);
  return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
}

}  // namespace dilatron
