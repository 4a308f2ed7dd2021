// The implementations of TrainingState, chosen by make_training_state.
#pragma once

#include <memory>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>
#endif

#include "trainer/training_state.h"

namespace dilatron {

std::unique_ptr<TrainingState> make_replicated_state(const GptShape& shape, Communicator& world);
// ranks_on_node: the ranks sharing this node's CPUs, for zero.host_threads = 0.
std::unique_ptr<TrainingState> make_zero3_state(const Config& config, const GptShape& shape, Communicator& world,
                                                int ranks_on_node);

#ifdef DILATRON_CUDA
// The GPU twins: device_world moves device buffers; host_world is the MPI world.
std::unique_ptr<TrainingState> make_device_replicated_state(const GptShape& shape, Communicator& device_world,
                                                            cudaStream_t stream);
// ZeRO-3 with its shards in GPU memory (zero.offload_*: device).
std::unique_ptr<TrainingState> make_device_zero3_state(const Config& config, const GptShape& shape,
                                                       Communicator& host_world, Communicator& device_world,
                                                       cudaStream_t stream);
// ZeRO-3 with its shards in host memory or on NVMe, groups staged to the GPU.
std::unique_ptr<TrainingState> make_staged_zero3_state(const Config& config, const GptShape& shape,
                                                       Communicator& host_world, int ranks_on_node,
                                                       cudaStream_t stream);
#endif

}  // namespace dilatron
