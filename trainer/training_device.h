// Where a rank trains and what it needs on a GPU: the device chosen from the rank's place on its
// node, one compute stream, and communicators that move device buffers (NCCL, or MPI staged
// through host memory when ranks share a GPU). A CPU run gets cuda == false and nothing else.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/process_groups.h"
#include "trainer/config.h"

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>
#endif

namespace dilatron {

class TrainingDevice {
 public:
  // Resolves config.device (auto: a GPU when this build has CUDA and one is visible), picks the
  // GPU from groups.placement, and for a GPU run builds device communicators over groups.world
  // and groups.sequence_parallel. Collective over the world. InputError for device: cuda
  // without a usable GPU, or more ranks per node than GPUs unless parallel.share_gpus.
  TrainingDevice(const Config& config, ProcessGroups& groups);
  ~TrainingDevice();
  TrainingDevice(const TrainingDevice&) = delete;
  TrainingDevice& operator=(const TrainingDevice&) = delete;

  bool cuda() const { return cuda_; }
  int gpu() const { return gpu_; }
  // The ranks on this rank's node (groups.placement), which share its CPUs as well as its GPUs.
  int ranks_on_node() const { return ranks_on_node_; }
  // "cpu", or e.g. "cuda:0 (NVIDIA H100 80GB HBM3), nccl".
  const std::string& describe() const { return description_; }
#ifdef DILATRON_CUDA
  cudaStream_t stream() const { return stream_; }
#endif
  // Device-buffer communicators (GPU runs only; the MPI groups serve host buffers).
  Communicator& world() const;
  Communicator& sequence_parallel() const;

 private:
  bool cuda_ = false;
  int gpu_ = -1;
  int ranks_on_node_ = 1;
  std::string description_ = "cpu";
#ifdef DILATRON_CUDA
  cudaStream_t stream_ = nullptr;
#endif
  std::unique_ptr<Communicator> world_, sequence_parallel_;
};

}  // namespace dilatron
