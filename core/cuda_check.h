// CUDA and cuBLAS status checks in the same family as core/check.h.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include "core/check.h"

#define DILATRON_CUDA_CHECK(expr)                                                        \
  do {                                                                                   \
    cudaError_t dilatron_err_ = (expr);                                                  \
    if (dilatron_err_ != cudaSuccess) [[unlikely]]                                       \
      ::dilatron::detail::throw_check_failure(#expr, __FILE__, __LINE__,                 \
                                              cudaGetErrorString(dilatron_err_));        \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at the next sync.
#define DILATRON_CUDA_CHECK_LAUNCH() DILATRON_CUDA_CHECK(cudaGetLastError())
#endif
