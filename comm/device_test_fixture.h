// What the multi-rank GPU tests share (comm/collectives_gpu_test, attention/ring_attention_gpu_test):
// the GPU each rank takes, chosen once and collectively, and a per-test-case fixture with a host
// MPI world for verdicts, a non-blocking stream (so the legacy stream's implicit synchronisation
// cannot hide a missing wait) and the device transports on it: MPI staged through host memory
// always, NCCL too when every rank has a GPU of its own. Test code only.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>
#include <mpi.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "comm/gpu_placement.h"
#include "comm/mpi_check.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "core/cuda_check.h"

namespace dilatron::device_test {

struct GpuSetup {
  int rank = 0, size = 1, device = 0, device_count = 0, local_size = 1;
  bool gpu_per_rank = false;  // NCCL runs only then
};

// Chosen once, collectively, in the first test case (every rank runs the same cases in order);
// rank 0 prints what it found, under `test_name`.
inline const GpuSetup& gpu_setup(const char* test_name) {
  static const GpuSetup setup = [test_name] {
    GpuSetup s;
    const Placement placement = mpi_placement();
    s.local_size = placement.local_size;
    s.device = select_gpu(placement, /*allow_shared=*/true);
    DILATRON_CUDA_CHECK(cudaGetDeviceCount(&s.device_count));
    DILATRON_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &s.rank));
    DILATRON_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &s.size));
    // Every rank must agree, or some would wait in ncclCommInitRank for the others forever.
    int own = placement.local_size <= s.device_count ? 1 : 0, all_own = 0;
    DILATRON_MPI_CHECK(MPI_Allreduce(&own, &all_own, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    s.gpu_per_rank = all_own == 1;
    if (s.rank == 0) {
      std::printf("%s: %d rank(s), %d on this node, %d GPU(s) visible: transports mpi%s\n", test_name, s.size,
                  s.local_size, s.device_count, s.gpu_per_rank ? " and nccl" : " only (NCCL needs a GPU per rank)");
      std::fflush(stdout);
    }
    return s;
  }();
  return setup;
}

struct Transport {
  std::string name;
  std::unique_ptr<Communicator> comm;  // the whole world
};

class DeviceFixture {
 public:
  explicit DeviceFixture(const char* test_name) {
    gpu_setup(test_name);
    MPI_Comm world;
    DILATRON_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world));
    host_ = std::make_unique<MpiCommunicator>(world, "host");
    DILATRON_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    transports_.push_back({"mpi", make_device_communicator(CommBackend::mpi, *host_)});
    if (gpu_setup(test_name).gpu_per_rank)
      transports_.push_back({"nccl", make_device_communicator(CommBackend::nccl, *host_)});
    for (Transport& t : transports_) t.comm->set_stream(stream_);
  }
  ~DeviceFixture() {
    transports_.clear();
    (void)cudaStreamDestroy(stream_);
  }
  DeviceFixture(const DeviceFixture&) = delete;
  DeviceFixture& operator=(const DeviceFixture&) = delete;

  MpiCommunicator& host() { return *host_; }
  cudaStream_t stream() const { return stream_; }
  std::vector<Transport>& transports() { return transports_; }

 private:
  std::unique_ptr<MpiCommunicator> host_;
  cudaStream_t stream_ = nullptr;
  std::vector<Transport> transports_;
};

}  // namespace dilatron::device_test
#endif
