// AdamW with decoupled weight decay (Loshchilov & Hutter, 2019), one flat fp32 tensor at a time.
// The CPU version is the reference; the CUDA version must agree with it to fp32 rounding.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>
#endif

namespace dilatron {

// step is 1-based: the bias corrections are 1 - beta^step.
struct AdamWStep {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};

// In place on param, m, v (each n floats):
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p),  mhat = m / (1 - beta1^step), ...
void adamw_update_cpu(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s);

#ifdef DILATRON_CUDA
// Asynchronous on stream; all four pointers are device memory.
void adamw_update_cuda(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s,
                       cudaStream_t stream);
#endif

namespace detail {

// Per-step constants shared by the CPU and CUDA paths, so both round them identically.
struct AdamWScalars {
  float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  float bias_correction1, bias_correction2;
};

AdamWScalars adamw_scalars(const AdamWStep& s);

}  // namespace detail
}  // namespace dilatron
