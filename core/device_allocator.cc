#include "core/device_allocator.h"

#ifdef DILATRON_CUDA
#include <algorithm>
#include <cstdio>

#include "core/cuda_check.h"

namespace dilatron {
namespace {

constexpr size_t kRounding = 512;

size_t rounded(size_t bytes) { return (std::max<size_t>(bytes, 1) + kRounding - 1) / kRounding * kRounding; }

}  // namespace

CachingDeviceAllocator::~CachingDeviceAllocator() {
  if (!in_use_.empty())
    std::fprintf(stderr, "dilatron: %zu device blocks still in use when the allocator was destroyed\n",
                 in_use_.size());
  release_cached_locked();
}

void* CachingDeviceAllocator::allocate(size_t bytes, cudaStream_t stream) {
  const size_t size = rounded(bytes);
  std::lock_guard lock(mutex_);
  // Best fit on the same stream, at most twice the request so a small tensor never pins a huge block.
  for (auto it = cached_.lower_bound(size); it != cached_.end() && it->first <= 2 * size; ++it) {
    if (it->second.second != stream) continue;
    void* ptr = it->second.first;
    const size_t block = it->first;
    cached_.erase(it);
    in_use_.emplace(ptr, Block{block, stream});
    stats_.bytes_in_use += static_cast<int64_t>(block);
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
    return ptr;
  }
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear the sticky-free error before retrying
    release_cached_locked();
    err = cudaMalloc(&ptr, size);
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    DILATRON_CHECK(false,
                   "out of GPU memory: asked for {:.1f} MiB with {:.1f} MiB held by dilatron and {:.1f} of {:.1f} "
                   "MiB free on the device ({}); lower data.micro_batch_size or model.seq_len, or enable "
                   "model.recompute or zero offload",
                   size / 1048576.0, stats_.bytes_reserved / 1048576.0, free_bytes / 1048576.0,
                   total_bytes / 1048576.0, cudaGetErrorString(err));
  }
  ++stats_.device_mallocs;
  stats_.bytes_reserved += static_cast<int64_t>(size);
  in_use_.emplace(ptr, Block{size, stream});
  stats_.bytes_in_use += static_cast<int64_t>(size);
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return ptr;
}

void CachingDeviceAllocator::free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard lock(mutex_);
  auto it = in_use_.find(ptr);
  DILATRON_CHECK(it != in_use_.end(), "freeing device pointer {} that this allocator did not hand out", ptr);
  stats_.bytes_in_use -= static_cast<int64_t>(it->second.bytes);
  cached_.emplace(it->second.bytes, std::make_pair(ptr, it->second.stream));
  in_use_.erase(it);
}

void CachingDeviceAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  release_cached_locked();
}

void CachingDeviceAllocator::release_cached_locked() {
  if (cached_.empty()) return;
  // A cached block may still be read by work queued before its free.
  DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto& [bytes, block] : cached_) {
    DILATRON_CUDA_CHECK(cudaFree(block.first));
    stats_.bytes_reserved -= static_cast<int64_t>(bytes);
  }
  cached_.clear();
}

CachingDeviceAllocator::Stats CachingDeviceAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

CachingDeviceAllocator& device_allocator() {
  // Never destroyed: static destructors may run after the CUDA runtime has shut down.
  static auto* allocator = new CachingDeviceAllocator();
  return *allocator;
}

PinnedHostBuffer::PinnedHostBuffer(size_t bytes) { reserve(bytes); }

PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) (void)cudaFreeHost(ptr_);
    ptr_ = o.ptr_, bytes_ = o.bytes_;
    o.ptr_ = nullptr, o.bytes_ = 0;
  }
  return *this;
}

PinnedHostBuffer::~PinnedHostBuffer() {
  if (ptr_) (void)cudaFreeHost(ptr_);
}

void PinnedHostBuffer::reserve(size_t bytes) {
  if (bytes <= bytes_) return;
  if (ptr_) DILATRON_CUDA_CHECK(cudaFreeHost(ptr_));
  ptr_ = nullptr, bytes_ = 0;
  DILATRON_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
  bytes_ = bytes;
}

}  // namespace dilatron
#endif
