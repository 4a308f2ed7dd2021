// Kernel launchers of optim/*.cu, for the host code in optim/*.cc only. They return the launch
// status instead of throwing because .cu files cannot include core/check.h: nvcc 13's host pass
// rejects fmt 9's headers.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <cstdint>

#include "optim/adamw.h"

namespace dilatron::detail {

cudaError_t launch_adamw(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWScalars& c,
                         cudaStream_t stream);
// One block per chunk (num_chunks of them, device memory); float4 where all four arrays are
// 16-byte aligned.
cudaError_t launch_adamw_segments(float* param, const float* grad, float* m, float* v, const AdamWChunk* chunks,
                                  int64_t num_chunks, const AdamWScalars& c, cudaStream_t stream);

// sum of x[i]^2 over n > 0 elements into *total (device), using partials (device doubles, count
// sum_of_squares_partials(n)) as scratch.
int sum_of_squares_partials(int64_t n);
cudaError_t launch_scale(float* x, int64_t n, float factor, cudaStream_t stream);
cudaError_t launch_sum_of_squares(const float* x, int64_t n, double* partials, double* total, cudaStream_t stream);

}  // namespace dilatron::detail
#endif
