// The communicator: the seam between algorithms (ring attention, ZeRO, the trainer) and a
// transport (MPI, NCCL). Every operation has an asynchronous form returning a CommRequest; the
// plain form waits for it.
//
// Buffers are host or device memory; one operation's buffers are all on the host or all on
// the device. MpiCommunicator takes both (device buffers are staged through pinned host
// memory); NcclCommunicator takes device buffers only. Counts are in elements of `dtype`. An
// operation a transport cannot do throws an Error saying so; nothing silently does nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

// cudaStream_t is CUstream_st*; declared here so the interface compiles without CUDA.
struct CUstream_st;

namespace dilatron {

enum class ReduceOp { sum, max };

// A pending operation. wait() returns once its buffers may be read or reused (device buffers:
// by work queued on the communicator's stream afterwards; see set_stream). Move-only;
// the destructor waits, so a buffer is never freed under a transfer in flight.
class CommRequest {
 public:
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
    virtual bool test() = 0;  // true once complete; drives progress
  };

  CommRequest() = default;  // already complete
  explicit CommRequest(std::unique_ptr<Pending> pending) : pending_(std::move(pending)) {}
  CommRequest(CommRequest&&) noexcept = default;
  CommRequest& operator=(CommRequest&& other) noexcept;
  ~CommRequest();

  void wait();
  bool test();

 private:
  std::unique_ptr<Pending> pending_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // For logs and errors: "world", "sp", "dp", ...
  virtual const std::string& name() const = 0;

  // In place: buf (count) := reduction over ranks.
  virtual CommRequest all_reduce_async(void* buf, int64_t count, DType dtype, ReduceOp op) = 0;
  // recv (size * count) := concatenation of every rank's send (count), in rank order.
  virtual CommRequest all_gather_async(const void* send, void* recv, int64_t count, DType dtype) = 0;
  // recv (count) := reduction over ranks of send[rank * count, (rank + 1) * count).
  virtual CommRequest reduce_scatter_async(const void* send, void* recv, int64_t count, DType dtype,
                                           ReduceOp op) = 0;
  virtual CommRequest broadcast_async(void* buf, int64_t count, DType dtype, int root) = 0;
  virtual CommRequest send_async(const void* buf, int64_t count, DType dtype, int peer, int tag) = 0;
  virtual CommRequest recv_async(void* buf, int64_t count, DType dtype, int peer, int tag) = 0;
  // Send to dst and receive from src at once (a ring step): never deadlocks whatever the order
  // in which ranks call it.
  virtual CommRequest send_recv_async(const void* send, int64_t send_count, int dst, void* recv,
                                      int64_t recv_count, int src, DType dtype, int tag) = 0;
  virtual void barrier() = 0;

  // Ranks with the same color form a new communicator, ordered by key.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) const = 0;

  // Device buffers (CUDA builds): an operation sees all work queued on this stream before the
  // call, and after its CommRequest's wait() returns, work queued on this stream afterwards sees
  // the result (wait() may return before the transfer is done on the device: the stream, not
  // the host, is what waits). Default: the legacy default stream (nullptr). Host buffers ignore
  // it. split() children inherit it.
  virtual void set_stream(CUstream_st* stream) { stream_ = stream; }
  CUstream_st* stream() const { return stream_; }

  void all_reduce(void* buf, int64_t count, DType dtype, ReduceOp op) { all_reduce_async(buf, count, dtype, op).wait(); }
  void all_gather(const void* send, void* recv, int64_t count, DType dtype) {
    all_gather_async(send, recv, count, dtype).wait();
  }
  void reduce_scatter(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op) {
    reduce_scatter_async(send, recv, count, dtype, op).wait();
  }
  void broadcast(void* buf, int64_t count, DType dtype, int root) { broadcast_async(buf, count, dtype, root).wait(); }
  void send(const void* buf, int64_t count, DType dtype, int peer, int tag) {
    send_async(buf, count, dtype, peer, tag).wait();
  }
  void recv(void* buf, int64_t count, DType dtype, int peer, int tag) { recv_async(buf, count, dtype, peer, tag).wait(); }
  void send_recv(const void* send, int64_t send_count, int dst, void* recv, int64_t recv_count, int src, DType dtype,
                 int tag) {
    send_recv_async(send, send_count, dst, recv, recv_count, src, dtype, tag).wait();
  }

 private:
  CUstream_st* stream_ = nullptr;
};

}  // namespace dilatron
