// The MPI transport: every operation is non-blocking MPI (MPI_Iallreduce, MPI_Iallgather,
// MPI_Ireduce_scatter_block, MPI_Ibcast, MPI_Isend/MPI_Irecv) and its CommRequest waits with
// MPI_Waitall. Needs a live MpiRuntime.
//
// dtypes: f32, f64, i32 are MPI_FLOAT, MPI_DOUBLE, MPI_INT32_T. bf16 moves as MPI_UINT16_T;
// bf16 reductions use user-defined MPI_Ops that combine two values in float and round the
// result to bf16 (nearest even). Each pairwise combination rounds, so a bf16 sum over more than
// two ranks depends on the order MPI combines them in; reduce in f32 where that matters.
//
// Counts are int in OpenMPI 4.1 (no MPI-4 large-count calls): a count above INT_MAX throws.
//
// Device buffers (CUDA builds) are staged through pinned host memory (comm/device_staging.h):
// the stream set by set_stream is synchronised before the MPI call, and the results are copied
// back on it when the request completes. Communicators split from one share one staging pool.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/device_staging.h"
#include "comm/mpi_runtime.h"
#include "comm/process_groups.h"

namespace dilatron {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed by the destructor) and sets MPI_ERRORS_RETURN on it.
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  MPI_Comm handle() const { return comm_; }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  CommRequest all_reduce_async(void* buf, int64_t count, DType dtype, ReduceOp op) override;
  CommRequest all_gather_async(const void* send, void* recv, int64_t count, DType dtype) override;
  CommRequest reduce_scatter_async(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op) override;
  CommRequest broadcast_async(void* buf, int64_t count, DType dtype, int root) override;
  CommRequest send_async(const void* buf, int64_t count, DType dtype, int peer, int tag) override;
  CommRequest recv_async(void* buf, int64_t count, DType dtype, int peer, int tag) override;
  CommRequest send_recv_async(const void* send, int64_t send_count, int dst, void* recv, int64_t recv_count, int src,
                              DType dtype, int tag) override;
  void barrier() override;

  // MPI_Comm_split; collective over this communicator.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) const override;
  // The same, typed: for transports bootstrapped over MPI (NcclCommunicator).
  std::unique_ptr<MpiCommunicator> split_mpi(int color, int key, const std::string& name) const;

 private:
  MpiCommunicator(MPI_Comm comm, std::string name, std::shared_ptr<StagingPool> staging_pool);

  int checked_count(int64_t count) const;
  void check_peer(int peer, const char* role) const;
  // The host view of one operation's buffers; `op` names it in errors.
  HostStaging stage(const char* op, std::initializer_list<BufferSpan> buffers) const;

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0, size_ = 1;
  std::shared_ptr<StagingPool> staging_pool_;
};

// A duplicate of MPI_COMM_WORLD named "world"; collective over all ranks.
std::unique_ptr<Communicator> mpi_world_communicator();

// This process's rank among the ranks on its node (MPI_Comm_split_type with
// MPI_COMM_TYPE_SHARED); collective over all ranks.
Placement mpi_placement();

}  // namespace dilatron
