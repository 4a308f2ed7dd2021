// Device buffers through a transport that moves host memory only (MpiCommunicator: the system
// OpenMPI is not CUDA-aware). This is also how two ranks share one GPU in tests, which NCCL
// refuses.
//
// HostStaging is one operation's view of its buffers. Host buffers pass through unchanged, and
// so does everything in a build without CUDA. Device buffers are swapped for pinned host
// buffers from a StagingPool:
//   - an input is copied out on the communicator's stream, which is then synchronised, so the
//     transport sees every write queued on the stream before the call;
//   - outputs are copied back on the stream once the transport's request completes, and the
//     stream is synchronised before the staging buffers go back to the pool, so a later
//     operation never overwrites one under a copy still in flight. The host blocks there; the
//     staged path favours simplicity over overlap (NcclCommunicator is the fast path).
//
// In a CUDA build the first classified pointer initialises the CUDA runtime on the current
// device: choose the GPU (select_gpu) before the first operation. On a machine without a usable
// driver every buffer is host memory.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace dilatron {

// Pinned host buffers reused across operations; several are out at once when requests overlap
// (a ring step holds one for its send and one for its receive). Thread-safe.
class StagingPool;

// nullptr in a build without CUDA, where nothing is ever staged.
std::shared_ptr<StagingPool> make_staging_pool();

// Device or managed memory. False for host memory (pinned or not), for nullptr, in a build
// without CUDA, and when no CUDA device is usable.
bool is_device_pointer(const void* ptr);

struct BufferSpan {
  const void* ptr;
  size_t bytes;
};

class HostStaging {
 public:
  // `what` names the operation in errors ("communicator 'world': all_gather"). Buffers of zero
  // bytes are never touched and fit either side; the others must all be on the host or all on
  // the device, else this throws an Error saying which is where.
  HostStaging(std::string what, std::initializer_list<BufferSpan> buffers, std::shared_ptr<StagingPool> pool,
              CUstream_st* stream);
  ~HostStaging();
  HostStaging(HostStaging&&) noexcept;
  HostStaging& operator=(HostStaging&&) = delete;

  bool on_device() const { return on_device_; }

  // Host memory for one of the buffers given to the constructor (the buffer itself on the host).
  const void* input(const void* buf, size_t bytes);  // read by the transport
  void* output(void* buf, size_t bytes);             // written by the transport
  void* in_out(void* buf, size_t bytes);             // both

  // The operation's request: completes when `transport` does, after the outputs are copied back.
  CommRequest finish(CommRequest transport) &&;

 private:
  struct Staged;  // the pinned buffers taken from the pool, and where each output goes back

  void* stage(const void* buf, size_t bytes, bool copy_in, bool copy_back);

  std::string what_;
  bool on_device_ = false;
  CUstream_st* stream_ = nullptr;
  std::unique_ptr<Staged> staged_;
};

}  // namespace dilatron
