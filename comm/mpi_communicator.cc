#include "comm/mpi_communicator.h"

#include <climits>
#include <utility>
#include <vector>

#include "comm/mpi_check.h"
#include "core/bf16.h"

namespace dilatron {
namespace {

// Up to two MPI requests (send_recv posts a receive and a send).
class MpiPending final : public CommRequest::Pending {
 public:
  explicit MpiPending(std::vector<MPI_Request> requests) : requests_(std::move(requests)) {}

  void wait() override {
    DILATRON_MPI_CHECK(MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
  }

  bool test() override {
    int done = 0;
    DILATRON_MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE));
    return done != 0;
  }

 private:
  std::vector<MPI_Request> requests_;
};

CommRequest pending(std::vector<MPI_Request> requests) {
  return CommRequest(std::make_unique<MpiPending>(std::move(requests)));
}

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::bf16: return MPI_UINT16_T;  // bytes only; reductions use the bf16 ops below
  }
  DILATRON_CHECK(false, "unknown dtype {}", static_cast<int>(dtype));
  return MPI_DATATYPE_NULL;
}

// MPI_User_function: inout[i] := round_bf16(float(in[i]) (+ or max) float(inout[i])).
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = bf16::from_float(a[i].to_float() + b[i].to_float());
}

void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) {
    if (a[i].to_float() > b[i].to_float()) b[i] = a[i];
  }
}

// Created on first use and kept until MPI_Finalize releases them.
MPI_Op bf16_op(ReduceOp op) {
  static MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;
  MPI_Op& slot = op == ReduceOp::sum ? sum : max;
  if (slot == MPI_OP_NULL) {
    DILATRON_MPI_CHECK(MPI_Op_create(op == ReduceOp::sum ? &bf16_sum : &bf16_max, /*commute=*/1, &slot));
  }
  return slot;
}

MPI_Op mpi_op(ReduceOp op, DType dtype) {
  if (dtype == DType::bf16) return bf16_op(op);
  return op == ReduceOp::sum ? MPI_SUM : MPI_MAX;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : MpiCommunicator(comm, std::move(name), make_staging_pool()) {}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, std::shared_ptr<StagingPool> staging_pool)
    : comm_(comm), name_(std::move(name)), staging_pool_(std::move(staging_pool)) {
  DILATRON_CHECK(MpiRuntime::active(), "communicator '{}' needs a live MpiRuntime", name_);
  DILATRON_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  DILATRON_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  DILATRON_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  // After MPI_Finalize the handle is already gone; a failure here has no one to tell.
  if (MpiRuntime::active()) MPI_Comm_free(&comm_);
}

int MpiCommunicator::checked_count(int64_t count) const {
  DILATRON_CHECK(count >= 0 && count <= INT_MAX,
                 "communicator '{}': count {} is outside [0, INT_MAX]; OpenMPI 4.1 has no large-count calls, "
                 "split the transfer",
                 name_, count);
  return static_cast<int>(count);
}

void MpiCommunicator::check_peer(int peer, const char* role) const {
  DILATRON_CHECK(peer >= 0 && peer < size_, "communicator '{}': {} {} is not a rank of {}", name_, role, peer, size_);
}

HostStaging MpiCommunicator::stage(const char* op, std::initializer_list<BufferSpan> buffers) const {
  return HostStaging(fmt::format("communicator '{}': {}", name_, op), buffers, staging_pool_, stream());
}

// Each operation validates its counts, stages its buffers (a no-op for host buffers) and posts
// the non-blocking MPI call on the host view.

CommRequest MpiCommunicator::all_reduce_async(void* buf, int64_t count, DType dtype, ReduceOp op) {
  const int n = checked_count(count);
  const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  HostStaging staging = stage("all_reduce", {{buf, bytes}});
  void* host = staging.in_out(buf, bytes);
  MPI_Request request;
  DILATRON_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, host, n, mpi_type(dtype), mpi_op(op, dtype), comm_, &request));
  return std::move(staging).finish(pending({request}));
}

CommRequest MpiCommunicator::all_gather_async(const void* send, void* recv, int64_t count, DType dtype) {
  const int n = checked_count(count);
  checked_count(count * size_);  // OpenMPI indexes the receive buffer with int displacements
  const size_t send_bytes = static_cast<size_t>(n) * dtype_size(dtype), recv_bytes = send_bytes * size_;
  HostStaging staging = stage("all_gather", {{send, send_bytes}, {recv, recv_bytes}});
  const void* host_send = staging.input(send, send_bytes);
  void* host_recv = staging.output(recv, recv_bytes);
  MPI_Request request;
  DILATRON_MPI_CHECK(MPI_Iallgather(host_send, n, mpi_type(dtype), host_recv, n, mpi_type(dtype), comm_, &request));
  return std::move(staging).finish(pending({request}));
}

CommRequest MpiCommunicator::reduce_scatter_async(const void* send, void* recv, int64_t count, DType dtype,
                                                  ReduceOp op) {
  const int n = checked_count(count);
  checked_count(count * size_);
  const size_t recv_bytes = static_cast<size_t>(n) * dtype_size(dtype), send_bytes = recv_bytes * size_;
  HostStaging staging = stage("reduce_scatter", {{send, send_bytes}, {recv, recv_bytes}});
  const void* host_send = staging.input(send, send_bytes);
  void* host_recv = staging.output(recv, recv_bytes);
  MPI_Request request;
  DILATRON_MPI_CHECK(
      MPI_Ireduce_scatter_block(host_send, host_recv, n, mpi_type(dtype), mpi_op(op, dtype), comm_, &request));
  return std::move(staging).finish(pending({request}));
}

CommRequest MpiCommunicator::broadcast_async(void* buf, int64_t count, DType dtype, int root) {
  check_peer(root, "root");
  const int n = checked_count(count);
  const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  HostStaging staging = stage("broadcast", {{buf, bytes}});
  // The root's buffer is read, the others' written; the root's copy back rewrites what it had.
  void* host = rank_ == root ? staging.in_out(buf, bytes) : staging.output(buf, bytes);
  MPI_Request request;
  DILATRON_MPI_CHECK(MPI_Ibcast(host, n, mpi_type(dtype), root, comm_, &request));
  return std::move(staging).finish(pending({request}));
}

CommRequest MpiCommunicator::send_async(const void* buf, int64_t count, DType dtype, int peer, int tag) {
  check_peer(peer, "destination");
  const int n = checked_count(count);
  const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  HostStaging staging = stage("send", {{buf, bytes}});
  const void* host = staging.input(buf, bytes);
  MPI_Request request;
  DILATRON_MPI_CHECK(MPI_Isend(host, n, mpi_type(dtype), peer, tag, comm_, &request));
  return std::move(staging).finish(pending({request}));
}

CommRequest MpiCommunicator::recv_async(void* buf, int64_t count, DType dtype, int peer, int tag) {
  check_peer(peer, "source");
  const int n = checked_count(count);
  const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  HostStaging staging = stage("recv", {{buf, bytes}});
  void* host = staging.output(buf, bytes);
  MPI_Request request;
  DILATRON_MPI_CHECK(MPI_Irecv(host, n, mpi_type(dtype), peer, tag, comm_, &request));
  return std::move(staging).finish(pending({request}));
}

CommRequest MpiCommunicator::send_recv_async(const void* send, int64_t send_count, int dst, void* recv,
                                             int64_t recv_count, int src, DType dtype, int tag) {
  check_peer(dst, "destination");
  check_peer(src, "source");
  const int n_send = checked_count(send_count), n_recv = checked_count(recv_count);
  const size_t send_bytes = static_cast<size_t>(n_send) * dtype_size(dtype);
  const size_t recv_bytes = static_cast<size_t>(n_recv) * dtype_size(dtype);
  HostStaging staging = stage("send_recv", {{send, send_bytes}, {recv, recv_bytes}});
  const void* host_send = staging.input(send, send_bytes);
  void* host_recv = staging.output(recv, recv_bytes);
  // Both posted before either is waited on, so no order of calls across ranks can deadlock.
  std::vector<MPI_Request> requests(2);
  DILATRON_MPI_CHECK(MPI_Irecv(host_recv, n_recv, mpi_type(dtype), src, tag, comm_, &requests[0]));
  try {
    DILATRON_MPI_CHECK(MPI_Isend(host_send, n_send, mpi_type(dtype), dst, tag, comm_, &requests[1]));
  } catch (const Error&) {
    MPI_Cancel(&requests[0]);
    MPI_Request_free(&requests[0]);
    throw;
  }
  return std::move(staging).finish(pending(std::move(requests)));
}

void MpiCommunicator::barrier() { DILATRON_MPI_CHECK(MPI_Barrier(comm_)); }

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) const {
  return split_mpi(color, key, name);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split_mpi(int color, int key, const std::string& name) const {
  DILATRON_CHECK(color >= 0, "communicator '{}': split color {} must be >= 0", name_, color);
  MPI_Comm part;
  DILATRON_MPI_CHECK(MPI_Comm_split(comm_, color, key, &part));
  // The private constructor: the child shares this communicator's staging pool.
  std::unique_ptr<MpiCommunicator> child(new MpiCommunicator(part, name, staging_pool_));
  child->set_stream(stream());
  return child;
}

std::unique_ptr<Communicator> mpi_world_communicator() {
  DILATRON_CHECK(MpiRuntime::active(), "mpi_world_communicator needs a live MpiRuntime");
  MPI_Comm world;
  DILATRON_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world));
  return std::make_unique<MpiCommunicator>(world, "world");
}

Placement mpi_placement() {
  DILATRON_CHECK(MpiRuntime::active(), "mpi_placement needs a live MpiRuntime");
  int world_rank = 0;
  DILATRON_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  MPI_Comm node;
  DILATRON_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node));
  Placement placement;
  DILATRON_MPI_CHECK(MPI_Comm_rank(node, &placement.local_rank));
  DILATRON_MPI_CHECK(MPI_Comm_size(node, &placement.local_size));
  DILATRON_MPI_CHECK(MPI_Comm_free(&node));
  return placement;
}

}  // namespace dilatron
