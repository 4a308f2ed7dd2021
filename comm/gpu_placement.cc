#include "comm/gpu_placement.h"

#include "core/check.h"

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#endif

namespace dilatron {

int gpu_for_local_rank(int local_rank, int local_size, int device_count, bool allow_shared) {
  DILATRON_CHECK(local_size >= 1 && local_rank >= 0 && local_rank < local_size,
                 "local rank {} of {} ranks on this node is not a rank of the node", local_rank, local_size);
  DILATRON_CHECK_INPUT(device_count > 0, "device: cuda but no CUDA device is visible");
  if (local_size <= device_count) return local_rank;
  DILATRON_CHECK_INPUT(allow_shared,
                       "{} ranks on this node but {} CUDA device(s) visible: run at most {} ranks per node, or set "
                       "device_sharing: allow (tests only)",
                       local_size, device_count, device_count);
  return local_rank % device_count;
}

#ifdef DILATRON_CUDA
int select_gpu(const Placement& placement, bool allow_shared) {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  // No driver or no device: both mean nothing is visible, which the user must hear as such.
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();
    count = 0;
  } else {
    DILATRON_CUDA_CHECK(status);
  }
  const int device = gpu_for_local_rank(placement.local_rank, placement.local_size, count, allow_shared);
  DILATRON_CUDA_CHECK(cudaSetDevice(device));
  return device;
}
#endif

}  // namespace dilatron
