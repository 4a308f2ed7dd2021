#include "comm/nccl_communicator.h"

#include <utility>

#include "core/check.h"

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "comm/device_staging.h"
#include "comm/mpi_check.h"
#include "core/cuda_check.h"

// NCCL status checks in the family of core/check.h: the expression, file:line, NCCL's text for
// the code and its last error message (which names the cause: a bad pointer, a peer gone, ...).
#define DILATRON_NCCL_CHECK(expr)                                                                         \
  do {                                                                                                    \
    ncclResult_t dilatron_nccl_rc_ = (expr);                                                              \
    if (dilatron_nccl_rc_ != ncclSuccess) [[unlikely]]                                                    \
      ::dilatron::detail::throw_check_failure(#expr, __FILE__, __LINE__,                                  \
                                              std::string(ncclGetErrorString(dilatron_nccl_rc_)) + ": " + \
                                                  ::dilatron::nccl_last_error());                         \
  } while (0)
#endif

namespace dilatron {

#ifdef DILATRON_CUDA
namespace {
// NCCL's message for its most recent failure (it may be empty, never null here).
const char* nccl_last_error() {
  const char* message = ncclGetLastError(nullptr);
  return message ? message : "";
}
}  // namespace
#endif

std::unique_ptr<Communicator> make_device_communicator(CommBackend backend, const MpiCommunicator& bootstrap) {
  switch (backend) {
    case CommBackend::mpi:
      // A duplicate of the bootstrap: its traffic never mixes with the bootstrap's own.
      return bootstrap.split_mpi(0, bootstrap.rank(), bootstrap.name());
    case CommBackend::nccl:
#ifdef DILATRON_CUDA
      return std::make_unique<NcclCommunicator>(bootstrap);
#else
      DILATRON_CHECK_INPUT(false,
                           "parallel.backend: nccl needs a CUDA build of dilatron; build with CUDA (scripts/setup) "
                           "or set parallel.backend: mpi");
#endif
  }
  DILATRON_CHECK(false, "unknown CommBackend {}", static_cast<int>(backend));
  return nullptr;
}

#ifdef DILATRON_CUDA

namespace {

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
  }
  DILATRON_CHECK(false, "unknown dtype {}", static_cast<int>(dtype));
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclMax; }

// Destructors cannot throw: what fails while releasing is reported and the rest still released.
void report_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) std::fprintf(stderr, "dilatron: %s failed: %s\n", what, cudaGetErrorString(status));
}

}  // namespace

struct NcclCommunicator::Shared {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;  // the communicator's own: every NCCL call runs here
  // Recorded on the user's stream before each operation. One is enough: cudaStreamWaitEvent
  // takes the record current at its call, so the next record cannot disturb an earlier wait.
  cudaEvent_t ready = nullptr;
  std::mutex mutex;
  std::vector<cudaEvent_t> free_events;  // completion events, reused

  // A request: the completion event of its operation.
  class Request final : public CommRequest::Pending {
   public:
    Request(std::shared_ptr<Shared> shared, cudaEvent_t done, cudaStream_t user_stream)
        : shared_(std::move(shared)), done_(done), user_stream_(user_stream) {}
    // Given back at once after wait(): the user's stream waits on the record, not the event.
    ~Request() override { shared_->give_back(done_); }

    void wait() override { DILATRON_CUDA_CHECK(cudaStreamWaitEvent(user_stream_, done_, 0)); }

    bool test() override {
      cudaError_t status = cudaEventQuery(done_);
      if (status == cudaErrorNotReady) {
        (void)cudaGetLastError();  // cudaErrorNotReady is no failure; leave nothing behind
        shared_->check_async_error();
        return false;
      }
      DILATRON_CUDA_CHECK(status);
      return true;
    }

   private:
    std::shared_ptr<Shared> shared_;  // keeps the NCCL communicator alive while this is pending
    cudaEvent_t done_;
    cudaStream_t user_stream_;
  };

  Shared() = default;
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;

  ~Shared() {
    if (stream) report_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize before ncclCommDestroy");
    if (comm) {
      ncclResult_t status = ncclCommDestroy(comm);
      if (status != ncclSuccess) {
        std::fprintf(stderr, "dilatron: ncclCommDestroy failed: %s\n", ncclGetErrorString(status));
      }
    }
    for (cudaEvent_t event : free_events) report_cuda(cudaEventDestroy(event), "cudaEventDestroy");
    if (ready) report_cuda(cudaEventDestroy(ready), "cudaEventDestroy");
    if (stream) report_cuda(cudaStreamDestroy(stream), "cudaStreamDestroy");
  }

  cudaEvent_t take_event() {
    {
      std::lock_guard lock(mutex);
      if (!free_events.empty()) {
        cudaEvent_t event = free_events.back();
        free_events.pop_back();
        return event;
      }
    }
    cudaEvent_t event;
    DILATRON_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    return event;
  }

  void give_back(cudaEvent_t event) {
    std::lock_guard lock(mutex);
    free_events.push_back(event);
  }

  // A failure on another rank or in the network shows here, not as an error code of a call.
  void check_async_error() {
    ncclResult_t async = ncclSuccess;
    DILATRON_NCCL_CHECK(ncclCommGetAsyncError(comm, &async));
    DILATRON_CHECK(async == ncclSuccess, "NCCL reported an asynchronous error: {}: {}", ncclGetErrorString(async),
                   nccl_last_error());
  }
};

NcclCommunicator::NcclCommunicator(const MpiCommunicator& bootstrap)
    : NcclCommunicator(bootstrap.split_mpi(0, bootstrap.rank(), bootstrap.name())) {}

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> bootstrap)
    : bootstrap_(std::move(bootstrap)),
      shared_(std::make_shared<Shared>()),
      rank_(bootstrap_->rank()),
      size_(bootstrap_->size()) {
  set_stream(bootstrap_->stream());
  ncclUniqueId id;
  if (rank_ == 0) DILATRON_NCCL_CHECK(ncclGetUniqueId(&id));
  DILATRON_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof id), MPI_BYTE, 0, bootstrap_->handle()));
  DILATRON_CUDA_CHECK(cudaStreamCreateWithFlags(&shared_->stream, cudaStreamNonBlocking));
  DILATRON_CUDA_CHECK(cudaEventCreateWithFlags(&shared_->ready, cudaEventDisableTiming));
  DILATRON_NCCL_CHECK(ncclCommInitRank(&shared_->comm, size_, id, rank_));
}

NcclCommunicator::~NcclCommunicator() = default;

void NcclCommunicator::check_peer(int peer, const char* role) const {
  DILATRON_CHECK(peer >= 0 && peer < size_, "communicator '{}': {} {} is not a rank of {}", name(), role, peer, size_);
}

void NcclCommunicator::begin(const char* op, std::initializer_list<BufferSpan> buffers) {
  for (const BufferSpan& buffer : buffers) {
    DILATRON_CHECK(buffer.bytes == 0 || is_device_pointer(buffer.ptr),
                   "communicator '{}': {}: NCCL needs device buffers, and {} is host memory; move the data to the "
                   "GPU or use an MpiCommunicator for host buffers",
                   name(), op, buffer.ptr);
  }
  DILATRON_CUDA_CHECK(cudaEventRecord(shared_->ready, stream()));
  DILATRON_CUDA_CHECK(cudaStreamWaitEvent(shared_->stream, shared_->ready, 0));
}

CommRequest NcclCommunicator::end() {
  cudaEvent_t done = shared_->take_event();
  cudaError_t status = cudaEventRecord(done, shared_->stream);
  if (status != cudaSuccess) shared_->give_back(done);
  DILATRON_CUDA_CHECK(status);
  return CommRequest(std::make_unique<Shared::Request>(shared_, done, stream()));
}

namespace {

size_t checked_count(const std::string& name, int64_t count) {
  DILATRON_CHECK(count >= 0, "communicator '{}': count {} is negative", name, count);
  return static_cast<size_t>(count);
}

}  // namespace

CommRequest NcclCommunicator::all_reduce_async(void* buf, int64_t count, DType dtype, ReduceOp op) {
  const size_t n = checked_count(name(), count);
  begin("all_reduce", {{buf, n * dtype_size(dtype)}});
  DILATRON_NCCL_CHECK(ncclAllReduce(buf, buf, n, nccl_type(dtype), nccl_op(op), shared_->comm, shared_->stream));
  return end();
}

CommRequest NcclCommunicator::all_gather_async(const void* send, void* recv, int64_t count, DType dtype) {
  const size_t n = checked_count(name(), count), bytes = n * dtype_size(dtype);
  begin("all_gather", {{send, bytes}, {recv, bytes * size_}});
  DILATRON_NCCL_CHECK(ncclAllGather(send, recv, n, nccl_type(dtype), shared_->comm, shared_->stream));
  return end();
}

CommRequest NcclCommunicator::reduce_scatter_async(const void* send, void* recv, int64_t count, DType dtype,
                                                   ReduceOp op) {
  const size_t n = checked_count(name(), count), bytes = n * dtype_size(dtype);
  begin("reduce_scatter", {{send, bytes * size_}, {recv, bytes}});
  DILATRON_NCCL_CHECK(
      ncclReduceScatter(send, recv, n, nccl_type(dtype), nccl_op(op), shared_->comm, shared_->stream));
  return end();
}

CommRequest NcclCommunicator::broadcast_async(void* buf, int64_t count, DType dtype, int root) {
  check_peer(root, "root");
  const size_t n = checked_count(name(), count);
  begin("broadcast", {{buf, n * dtype_size(dtype)}});
  DILATRON_NCCL_CHECK(ncclBroadcast(buf, buf, n, nccl_type(dtype), root, shared_->comm, shared_->stream));
  return end();
}

CommRequest NcclCommunicator::send_async(const void* buf, int64_t count, DType dtype, int peer, int tag) {
  check_peer(peer, "destination");
  DILATRON_CHECK(tag >= 0, "communicator '{}': send tag {} must be >= 0", name(), tag);
  const size_t n = checked_count(name(), count);
  begin("send", {{buf, n * dtype_size(dtype)}});
  DILATRON_NCCL_CHECK(ncclSend(buf, n, nccl_type(dtype), peer, shared_->comm, shared_->stream));
  return end();
}

CommRequest NcclCommunicator::recv_async(void* buf, int64_t count, DType dtype, int peer, int tag) {
  check_peer(peer, "source");
  DILATRON_CHECK(tag >= 0, "communicator '{}': recv tag {} must be >= 0", name(), tag);
  const size_t n = checked_count(name(), count);
  begin("recv", {{buf, n * dtype_size(dtype)}});
  DILATRON_NCCL_CHECK(ncclRecv(buf, n, nccl_type(dtype), peer, shared_->comm, shared_->stream));
  return end();
}

CommRequest NcclCommunicator::send_recv_async(const void* send, int64_t send_count, int dst, void* recv,
                                              int64_t recv_count, int src, DType dtype, int tag) {
  check_peer(dst, "destination");
  check_peer(src, "source");
  DILATRON_CHECK(tag >= 0, "communicator '{}': send_recv tag {} must be >= 0", name(), tag);
  const size_t n_send = checked_count(name(), send_count), n_recv = checked_count(name(), recv_count);
  begin("send_recv", {{send, n_send * dtype_size(dtype)}, {recv, n_recv * dtype_size(dtype)}});
  // One group: NCCL runs both halves together, so no order of calls across ranks can deadlock.
  DILATRON_NCCL_CHECK(ncclGroupStart());
  ncclResult_t send_status = ncclSend(send, n_send, nccl_type(dtype), dst, shared_->comm, shared_->stream);
  ncclResult_t recv_status = send_status == ncclSuccess
                                 ? ncclRecv(recv, n_recv, nccl_type(dtype), src, shared_->comm, shared_->stream)
                                 : ncclSuccess;
  ncclResult_t group_status = ncclGroupEnd();  // even after a failure: NCCL's group state must be closed
  DILATRON_NCCL_CHECK(send_status);
  DILATRON_NCCL_CHECK(recv_status);
  DILATRON_NCCL_CHECK(group_status);
  return end();
}

void NcclCommunicator::barrier() {
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(shared_->stream));
  bootstrap_->barrier();
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) const {
  std::unique_ptr<NcclCommunicator> child(new NcclCommunicator(bootstrap_->split_mpi(color, key, name)));
  child->set_stream(stream());
  return child;
}

#endif  // DILATRON_CUDA

}  // namespace dilatron
