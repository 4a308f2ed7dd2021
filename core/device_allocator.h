// Device memory that the step loop never has to cudaMalloc or cudaFree.
//
// CachingDeviceAllocator hands out blocks from cudaMalloc'd memory it keeps: a freed block goes
// back to a free list and serves the next request of a size it fits (best fit, never more than
// twice the request), so after the first step a training loop runs entirely on cached blocks
// (stats().device_mallocs stops growing; a GPU test checks it). Blocks are stream-ordered the
// simple way: a block freed by work on stream s is handed out again only for stream s, whose
// later work runs after everything queued before the free. Thread-safe.
//
// PinnedHostBuffer is page-locked host memory for asynchronous copies (offload staging,
// host-staged communication).
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>

namespace dilatron {

class CachingDeviceAllocator {
 public:
  struct Stats {
    int64_t device_mallocs = 0;   // cudaMalloc calls so far
    int64_t bytes_reserved = 0;   // held from the driver (in use + cached)
    int64_t bytes_in_use = 0;
    int64_t peak_bytes_in_use = 0;
  };

  CachingDeviceAllocator() = default;
  ~CachingDeviceAllocator();  // frees everything; blocks still out are a bug, reported to stderr
  CachingDeviceAllocator(const CachingDeviceAllocator&) = delete;
  CachingDeviceAllocator& operator=(const CachingDeviceAllocator&) = delete;

  // At least `bytes` (rounded up to 512), 256-byte aligned, for work on `stream`. Throws an Error
  // naming the size and what is reserved when the device is out of memory, after returning the
  // cached blocks to the driver and trying once more.
  void* allocate(size_t bytes, cudaStream_t stream);
  void free(void* ptr);
  // Gives every cached (free) block back to the driver.
  void release_cached();
  Stats stats() const;

 private:
  struct Block {
    size_t bytes;
    cudaStream_t stream;
  };
  void release_cached_locked();

  mutable std::mutex mutex_;
  std::unordered_map<void*, Block> in_use_;
  std::multimap<size_t, std::pair<void*, cudaStream_t>> cached_;  // by size
  Stats stats_;
};

// The process's allocator (one device per process).
CachingDeviceAllocator& device_allocator();

// A block of the process allocator owned by a handle, released on destruction.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(int64_t count, cudaStream_t stream)
      : ptr_(static_cast<T*>(device_allocator().allocate(static_cast<size_t>(count) * sizeof(T), stream))),
        count_(count) {}
  DeviceArray(DeviceArray&& o) noexcept : ptr_(o.ptr_), count_(o.count_) { o.ptr_ = nullptr, o.count_ = 0; }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = o.ptr_, count_ = o.count_;
      o.ptr_ = nullptr, o.count_ = 0;
    }
    return *this;
  }
  ~DeviceArray() { reset(); }

  T* data() const { return ptr_; }
  int64_t size() const { return count_; }
  void reset() {
    if (ptr_) device_allocator().free(ptr_);
    ptr_ = nullptr, count_ = 0;
  }

 private:
  T* ptr_ = nullptr;
  int64_t count_ = 0;
};

class PinnedHostBuffer {
 public:
  PinnedHostBuffer() = default;
  explicit PinnedHostBuffer(size_t bytes);
  PinnedHostBuffer(PinnedHostBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  PinnedHostBuffer& operator=(PinnedHostBuffer&& o) noexcept;
  ~PinnedHostBuffer();

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  // Grows (never shrinks) to at least `bytes`; the contents are not kept.
  void reserve(size_t bytes);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace dilatron
#endif
