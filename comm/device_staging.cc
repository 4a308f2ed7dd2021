#include "comm/device_staging.h"

#include <utility>
#include <vector>

#include "core/check.h"

#ifdef DILATRON_CUDA
#include <algorithm>
#include <mutex>

#include "core/cuda_check.h"
#include "core/device_allocator.h"
#endif

namespace dilatron {

#ifdef DILATRON_CUDA

class StagingPool {
 public:
  // The smallest free buffer that holds `bytes`; else the largest free one, grown; else a new
  // one. After the first few steps of a loop every request is served without cudaMallocHost.
  PinnedHostBuffer take(size_t bytes) {
    PinnedHostBuffer buffer;
    {
      std::lock_guard lock(mutex_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->bytes() >= bytes && (best == free_.end() || it->bytes() < best->bytes())) best = it;
      }
      if (best == free_.end() && !free_.empty()) {
        auto smaller = [](const PinnedHostBuffer& a, const PinnedHostBuffer& b) { return a.bytes() < b.bytes(); };
        best = std::max_element(free_.begin(), free_.end(), smaller);
      }
      if (best != free_.end()) {
        buffer = std::move(*best);
        free_.erase(best);
      }
    }
    buffer.reserve(bytes);  // outside the lock: cudaMallocHost takes milliseconds
    return buffer;
  }

  void give_back(PinnedHostBuffer buffer) {
    std::lock_guard lock(mutex_);
    free_.push_back(std::move(buffer));
  }

 private:
  std::mutex mutex_;
  std::vector<PinnedHostBuffer> free_;
};

std::shared_ptr<StagingPool> make_staging_pool() { return std::make_shared<StagingPool>(); }

namespace {

// Whether this process can see a CUDA device at all; asked once. Without a driver (CI machines)
// cudaGetDeviceCount fails, and then no pointer can be device memory.
bool cuda_device_visible() {
  static const bool visible = [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      (void)cudaGetLastError();  // not sticky, but leave no error behind for the caller's next check
      return false;
    }
    return count > 0;
  }();
  return visible;
}

}  // namespace

bool is_device_pointer(const void* ptr) {
  if (ptr == nullptr || !cuda_device_visible()) return false;
  cudaPointerAttributes attributes;
  DILATRON_CUDA_CHECK(cudaPointerGetAttributes(&attributes, ptr));
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

// The staged buffers of one operation; once the transport's request is attached, also the
// operation's pending request.
struct HostStaging::Staged final : CommRequest::Pending {
  struct CopyBack {
    void* device;
    const void* host;
    size_t bytes;
  };

  std::shared_ptr<StagingPool> pool;
  cudaStream_t stream = nullptr;
  std::vector<PinnedHostBuffer> buffers;
  std::vector<CopyBack> copy_backs;
  CommRequest transport;
  bool complete = false;

  void wait() override {
    transport.wait();
    copy_back();
  }

  bool test() override {
    if (!transport.test()) return false;
    copy_back();
    return true;
  }

  void copy_back() {
    if (complete) return;
    complete = true;
    for (const CopyBack& c : copy_backs) {
      DILATRON_CUDA_CHECK(cudaMemcpyAsync(c.device, c.host, c.bytes, cudaMemcpyHostToDevice, stream));
    }
    // A buffer back in the pool may be handed out at once: its copy must be over by then.
    if (!copy_backs.empty()) DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (PinnedHostBuffer& buffer : buffers) pool->give_back(std::move(buffer));
    buffers.clear();
  }
};

void* HostStaging::stage(const void* buf, size_t bytes, bool copy_in, bool copy_back) {
  // Never read nor written by the transport; the pointer itself is all it needs.
  if (bytes == 0) return const_cast<void*>(buf);
  PinnedHostBuffer buffer = staged_->pool->take(bytes);
  void* host = buffer.data();
  staged_->buffers.push_back(std::move(buffer));
  if (copy_in) {
    DILATRON_CUDA_CHECK(cudaMemcpyAsync(host, buf, bytes, cudaMemcpyDeviceToHost, stream_));
    // Also waits for every earlier write on the stream: the ordering rule of set_stream.
    DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  if (copy_back) staged_->copy_backs.push_back({const_cast<void*>(buf), host, bytes});
  return host;
}

#else  // no CUDA: every buffer is host memory, and nothing is staged

class StagingPool {};

std::shared_ptr<StagingPool> make_staging_pool() { return nullptr; }

bool is_device_pointer(const void*) { return false; }

struct HostStaging::Staged {};

void* HostStaging::stage(const void*, size_t, bool, bool) {
  DILATRON_CHECK(false, "{}: device buffers need a CUDA build", what_);
  return nullptr;
}

#endif

HostStaging::HostStaging(std::string what, std::initializer_list<BufferSpan> buffers,
                         std::shared_ptr<StagingPool> pool, CUstream_st* stream)
    : what_(std::move(what)), stream_(stream) {
  int on_device = 0, on_host = 0;
  for (const BufferSpan& buffer : buffers) {
    if (buffer.bytes == 0) continue;
    ++(is_device_pointer(buffer.ptr) ? on_device : on_host);
  }
  DILATRON_CHECK(on_device == 0 || on_host == 0,
                 "{}: {} of its buffers are in device memory and {} in host memory; one operation's buffers must "
                 "all be on the device or all on the host",
                 what_, on_device, on_host);
  on_device_ = on_device > 0;
#ifdef DILATRON_CUDA
  if (on_device_) {
    DILATRON_CHECK(pool != nullptr, "{}: device buffers but no staging pool", what_);
    staged_ = std::make_unique<Staged>();
    staged_->pool = std::move(pool);
    staged_->stream = stream_;
  }
#else
  (void)pool;
#endif
}

HostStaging::~HostStaging() = default;
HostStaging::HostStaging(HostStaging&&) noexcept = default;

const void* HostStaging::input(const void* buf, size_t bytes) {
  return on_device_ ? stage(buf, bytes, /*copy_in=*/true, /*copy_back=*/false) : buf;
}

void* HostStaging::output(void* buf, size_t bytes) {
  return on_device_ ? stage(buf, bytes, /*copy_in=*/false, /*copy_back=*/true) : buf;
}

void* HostStaging::in_out(void* buf, size_t bytes) {
  return on_device_ ? stage(buf, bytes, /*copy_in=*/true, /*copy_back=*/true) : buf;
}

CommRequest HostStaging::finish(CommRequest transport) && {
  if (!on_device_) return transport;
#ifdef DILATRON_CUDA
  staged_->transport = std::move(transport);
  return CommRequest(std::move(staged_));
#else
  return transport;
#endif
}

}  // namespace dilatron
