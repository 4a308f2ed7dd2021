// Device communicators: NcclCommunicator, and make_device_communicator(), which picks the
// transport that carries device buffers (parallel.backend: nccl | mpi).
//
// NcclCommunicator (CUDA builds) takes device buffers only, one GPU per rank (NCCL refuses two
// ranks on one GPU; MpiCommunicator's host staging serves that case). Its operations run on a
// stream of its own:
//   - each operation records an event on the user's stream (set_stream) and makes its own
//     stream wait for it, so it sees all work queued there before the call;
//   - then it issues the NCCL call and records a completion event;
//   - CommRequest::wait() makes the user's stream wait for that event and returns at once: the
//     host never blocks, and buffers may be reused by work on the user's stream after wait().
//     test() asks whether the event has completed.
// Events are pooled: a steady loop creates none.
//
// Point-to-point: NCCL has no tags, so messages between two ranks match in the order they were
// issued (the `tag` argument is only checked to be >= 0, as MPI does). Operations run one after
// another on the communicator's stream, so a pair of ranks exchanging both ways must use
// send_recv (one NCCL group), never a send and a recv issued in the same order on both ranks.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"

namespace dilatron {

// How device buffers travel between ranks.
enum class CommBackend {
  nccl,  // NcclCommunicator: one GPU per rank
  mpi,   // MpiCommunicator staging through pinned host memory: works when ranks share a GPU
};

// A communicator for device buffers over the ranks of `bootstrap`, named as it; collective over
// it. nccl in a build without CUDA throws an InputError naming parallel.backend.
std::unique_ptr<Communicator> make_device_communicator(CommBackend backend, const MpiCommunicator& bootstrap);

#ifdef DILATRON_CUDA

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`: rank 0 makes an ncclUniqueId, MPI broadcasts it and every rank
  // joins with ncclCommInitRank on its current device (call select_gpu first). Keeps a duplicate
  // of `bootstrap` for barrier() and split().
  explicit NcclCommunicator(const MpiCommunicator& bootstrap);
  // Waits for its stream, then ncclCommDestroy; destroy communicators on every rank in the same order.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return bootstrap_->name(); }

  CommRequest all_reduce_async(void* buf, int64_t count, DType dtype, ReduceOp op) override;
  CommRequest all_gather_async(const void* send, void* recv, int64_t count, DType dtype) override;
  CommRequest reduce_scatter_async(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op) override;
  CommRequest broadcast_async(void* buf, int64_t count, DType dtype, int root) override;
  CommRequest send_async(const void* buf, int64_t count, DType dtype, int peer, int tag) override;
  CommRequest recv_async(void* buf, int64_t count, DType dtype, int peer, int tag) override;
  CommRequest send_recv_async(const void* send, int64_t send_count, int dst, void* recv, int64_t recv_count, int src,
                              DType dtype, int tag) override;
  // Waits for this communicator's stream, then an MPI barrier over the bootstrap.
  void barrier() override;

  // A new NCCL communicator over the MPI split of the bootstrap; collective over this one.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) const override;

 private:
  // What requests share with the communicator (a request may outlive it): the NCCL
  // communicator, its stream and the event pool.
  struct Shared;

  explicit NcclCommunicator(std::unique_ptr<MpiCommunicator> bootstrap);

  // Checks that every buffer of nonzero size is device memory, then orders this communicator's
  // stream after the user's stream.
  void begin(const char* op, std::initializer_list<BufferSpan> buffers);
  // The request completing with everything issued on this communicator's stream so far.
  CommRequest end();
  void check_peer(int peer, const char* role) const;

  std::unique_ptr<MpiCommunicator> bootstrap_;
  std::shared_ptr<Shared> shared_;
  int rank_ = 0, size_ = 1;
};

#endif  // DILATRON_CUDA

}  // namespace dilatron
