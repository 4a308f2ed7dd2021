#include "zero/memory_shard_store.h"

#include <cstdlib>
#include <cstring>

#include "core/check.h"
#ifdef DILATRON_CUDA
#include "core/cuda_check.h"
#endif

namespace dilatron {
namespace {

constexpr int64_t kPieceAlignment = 64;  // a cache line; AVX-512 loads
constexpr int64_t kFloatsPerAlignment = kPieceAlignment / sizeof(float);

void free_host(float* p) { std::free(p); }

#ifdef DILATRON_CUDA
void free_pinned(float* p) { cudaFreeHost(p); }
#endif

std::unique_ptr<float, void (*)(float*)> allocate_arena(StorageTier tier, int64_t bytes) {
  // One alignment unit even when empty, so resident() of an empty piece is a valid pointer.
  auto size = static_cast<size_t>(std::max(bytes, kPieceAlignment));
#ifdef DILATRON_CUDA
  if (tier == StorageTier::cpu && pin_host_buffers()) {
    void* p = nullptr;
    DILATRON_CUDA_CHECK(cudaHostAlloc(&p, size, cudaHostAllocDefault));
    return {static_cast<float*>(p), free_pinned};
  }
#else
  (void)tier;
#endif
  void* p = std::aligned_alloc(kPieceAlignment, size);
  DILATRON_CHECK(p != nullptr, "cannot allocate {} bytes for the {} shard store", size, storage_tier_name(tier));
  return {static_cast<float*>(p), free_host};
}

}  // namespace

MemoryShardStore::MemoryShardStore(StorageTier tier, std::vector<int64_t> piece_elements)
    : tier_(tier), elements_(std::move(piece_elements)), arena_(nullptr, free_host) {
  DILATRON_CHECK(tier == StorageTier::device || tier == StorageTier::cpu, "tier {}", storage_tier_name(tier));
  int64_t floats = 0;
  for (int64_t n : elements_) {
    offsets_.push_back(floats);
    floats += (n + kFloatsPerAlignment - 1) / kFloatsPerAlignment * kFloatsPerAlignment;
  }
  arena_bytes_ = floats * static_cast<int64_t>(sizeof(float));
  arena_ = allocate_arena(tier, arena_bytes_);
}

int64_t MemoryShardStore::piece_elements(int piece) const {
  DILATRON_CHECK(piece >= 0 && piece < pieces(), "piece {} of {}", piece, pieces());
  return elements_[piece];
}

float* MemoryShardStore::resident(int piece) {
  DILATRON_CHECK(piece >= 0 && piece < pieces(), "piece {} of {}", piece, pieces());
  return arena_.get() + offsets_[piece];
}

IoTicket MemoryShardStore::read_async(int piece, float* dst) {
  const float* src = resident(piece);
  DILATRON_CHECK(dst != nullptr || elements_[piece] == 0, "read of piece {} into a null buffer", piece);
  if (elements_[piece] > 0) std::memcpy(dst, src, static_cast<size_t>(elements_[piece]) * sizeof(float));
  return IoTicket();
}

IoTicket MemoryShardStore::write_async(int piece, const float* src) {
  float* dst = resident(piece);
  DILATRON_CHECK(src != nullptr || elements_[piece] == 0, "write of piece {} from a null buffer", piece);
  if (elements_[piece] > 0 && src != dst)
    std::memcpy(dst, src, static_cast<size_t>(elements_[piece]) * sizeof(float));
  return IoTicket();
}

}  // namespace dilatron
