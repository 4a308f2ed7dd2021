#include "trainer/training_device.h"

#include <fmt/core.h>

#include "core/check.h"

#ifdef DILATRON_CUDA
#include "comm/gpu_placement.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "core/cuda_check.h"
#endif

namespace dilatron {
namespace {

#ifdef DILATRON_CUDA
int visible_gpus() {
  int count = 0;
  // No driver or no device reads as zero GPUs: `auto` then trains on the CPU.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

MpiCommunicator& as_mpi(Communicator& c, const char* group) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&c);
  DILATRON_CHECK(mpi != nullptr, "the {} group is not an MPI communicator, which GPU runs bootstrap from", group);
  return *mpi;
}
#endif

}  // namespace

TrainingDevice::TrainingDevice(const Config& c, ProcessGroups& g) : ranks_on_node_(g.placement.local_size) {
#ifdef DILATRON_CUDA
  // Every rank decides alike: ranks of one job see the same kind of node.
  cuda_ = c.device == DeviceKind::cuda || (c.device == DeviceKind::automatic && visible_gpus() > 0);
  if (!cuda_) return;
  gpu_ = select_gpu(g.placement, c.parallel.share_gpus);
  DILATRON_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  const bool shared = g.placement.local_size > visible_gpus();
  const CommBackend backend = c.parallel.backend == ParallelBackend::nccl ? CommBackend::nccl
                              : c.parallel.backend == ParallelBackend::mpi || shared ? CommBackend::mpi
                                                                                     : CommBackend::nccl;
  DILATRON_CHECK_INPUT(!(shared && backend == CommBackend::nccl),
                       "parallel.backend: nccl cannot run {} ranks on {} GPUs of a node (NCCL refuses two ranks on "
                       "one GPU); use parallel.backend: mpi or auto",
                       g.placement.local_size, visible_gpus());
  const char* name = backend == CommBackend::nccl ? "nccl" : "mpi";
  world_ = make_device_communicator(backend, as_mpi(*g.world, "world"));
  sequence_parallel_ = make_device_communicator(backend, as_mpi(*g.sequence_parallel, "sequence-parallel"));
  world_->set_stream(stream_);
  sequence_parallel_->set_stream(stream_);
  cudaDeviceProp prop{};
  DILATRON_CUDA_CHECK(cudaGetDeviceProperties(&prop, gpu_));
  description_ = fmt::format("cuda:{} ({}), {} ranks on this node, {} between GPU buffers", gpu_, prop.name,
                             g.placement.local_size, name);
#else
  DILATRON_CHECK_INPUT(c.device != DeviceKind::cuda,
                       "device: cuda, but this dilatron was built without CUDA; rebuild with a CUDA toolkit "
                       "(scripts/setup finds /usr/local/cuda) or set device: cpu");
#endif
}

TrainingDevice::~TrainingDevice() {
#ifdef DILATRON_CUDA
  world_.reset();
  sequence_parallel_.reset();
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
#endif
}

Communicator& TrainingDevice::world() const {
  DILATRON_CHECK(world_ != nullptr, "device communicators exist only in GPU runs");
  return *world_;
}

Communicator& TrainingDevice::sequence_parallel() const {
  DILATRON_CHECK(sequence_parallel_ != nullptr, "device communicators exist only in GPU runs");
  return *sequence_parallel_;
}

}  // namespace dilatron
