// Global gradient-norm clipping: the squared norm of each gradient tensor is summed (in double)
// across tensors and ranks by the caller, then every gradient is scaled by clip_coefficient.
#pragma once

#include <cstdint>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>
#endif

namespace dilatron {

// sum of x[i]^2, accumulated in double.
double sum_of_squares_cpu(const float* x, int64_t n);

#ifdef DILATRON_CUDA
// Device reduction with double accumulators, deterministic for a given n (fixed grid, fixed
// reduction tree). x is device memory; synchronizes stream to return the host value.
double sum_of_squares_cuda(const float* x, int64_t n, cudaStream_t stream);
// x *= factor on the device (clipping), queued on stream.
void scale_cuda(float* x, int64_t n, float factor, cudaStream_t stream);
#endif

// min(1, max_norm / (global_norm + 1e-6)); max_norm <= 0 turns clipping off (returns 1).
float clip_coefficient(double global_norm, float max_norm);

}  // namespace dilatron
