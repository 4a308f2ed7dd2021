// Asynchronous O_DIRECT file I/O for the NVMe offload tier, after the ideas of DeepSpeed's
// csrc/aio: an engine with a const config, requests of block_bytes with a bounded queue, aligned
// buffers. Two implementations behind one interface: io_uring (liburing) and a pool of threads
// calling pread/pwrite, taken when io_uring cannot be set up (e.g. Docker's seccomp profile
// refuses io_uring_setup with EPERM/ENOSYS) and logged once per process.
//
// Threading: an engine and its tickets are used from one thread. The io_uring engine owns its
// ring and has no thread of its own: completions are reaped, and the blocks that did not fit in
// the queue are submitted, inside IoTicket::wait() and (without blocking) at each read()/write().
// A transfer larger than queue_depth * block_bytes therefore progresses in the background only
// up to the queue depth until someone waits. The thread pool's workers run every queued block in
// the background. Tickets may outlive their engine (they share its ring / their transfer state).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "zero/shard_store.h"

namespace dilatron {

// O_DIRECT needs buffers, sizes and offsets aligned to the logical block size; 4096 covers every
// NVMe and ext4/xfs configuration we run on.
inline constexpr int64_t kIoAlignment = 4096;

struct IoEngineConfig {
  int64_t block_bytes = 1 << 20;  // request size; a positive multiple of kIoAlignment
  int queue_depth = 8;            // requests in flight per engine
  bool allow_thread_pool = true;  // fall back to the thread pool when io_uring is unavailable
  int threads = 2;                // thread pool workers (at most queue_depth of them run)
  // Tests only: when non-empty, make_io_engine acts as if io_uring_queue_init failed with this
  // reason (exercises the fallback and its log line on machines where io_uring works).
  std::string force_thread_pool_reason;
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  virtual const char* name() const = 0;  // "io_uring" or "thread_pool"
  // Reads/writes `bytes` at `offset` of fd into/from buf. buf, bytes and offset must be
  // multiples of kIoAlignment (checked here). The transfer is split into block_bytes requests,
  // at most queue_depth in flight. wait() throws an Error naming `path` and the cause on any
  // failure: an error return (EIO, ENOSPC, EBADF...), or a read that reaches end of file. Short
  // transfers are retried for the remainder first. wait() returns or throws only once no request
  // of the transfer is in flight, so the buffer is free either way.
  virtual IoTicket read(int fd, const std::string& path, void* buf, int64_t bytes, int64_t offset) = 0;
  virtual IoTicket write(int fd, const std::string& path, const void* buf, int64_t bytes,
                         int64_t offset) = 0;
};

// io_uring when io_uring_queue_init succeeds; otherwise the thread pool (logged once with the
// reason through spdlog::warn), or, with allow_thread_pool false, an Error saying that io_uring
// is unavailable and why.
std::unique_ptr<IoEngine> make_io_engine(const IoEngineConfig& config);
std::unique_ptr<IoEngine> make_thread_pool_engine(const IoEngineConfig& config);

}  // namespace dilatron
