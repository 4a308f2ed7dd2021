// Which GPU a rank uses: rank i of a node takes GPU i. More ranks than GPUs on a node is
// refused unless sharing is allowed (tests only: NCCL refuses two ranks on one GPU, and shared
// GPUs measure nothing useful), in which case ranks wrap around the GPUs.
#pragma once

#include "comm/process_groups.h"

namespace dilatron {

// The device index for rank `local_rank` of the `local_size` ranks on this node, with
// `device_count` GPUs visible. Throws InputError when no GPU is visible, or when there are more
// ranks than GPUs and `allow_shared` is false.
int gpu_for_local_rank(int local_rank, int local_size, int device_count, bool allow_shared);

#ifdef DILATRON_CUDA
// gpu_for_local_rank with cudaGetDeviceCount's count, made current with cudaSetDevice; returns
// the index. Call it before any other CUDA work of the process.
int select_gpu(const Placement& placement, bool allow_shared);
#endif

}  // namespace dilatron
