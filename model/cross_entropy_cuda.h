// Fused softmax + cross-entropy on the GPU, the CUDA twin of model/cross_entropy.h (same
// names, a trailing stream). Logits (N, V) are bf16 (training) or fp32 (tests); every sum,
// max and exp runs in fp32 and no fp32 copy of the logits is ever made: the forward reads
// each row once (online softmax: running max and rescaled sum), the backward reads it again.
//
// As on the CPU: a target < 0 is ignored (loss 0, gradient row 0), lse is written for every
// row, and the backward WRITES dlogits = (softmax - onehot(target)) * dloss_weight, where
// dlogits may alias logits. Unlike the CPU, a kernel cannot throw: a target >= V yields a
// NaN loss, so the data loader must validate targets on the host.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <cstdint>

#include "core/bf16.h"

namespace dilatron {

// losses (N), lse (N): fp32, device pointers.
void cross_entropy_forward(float* losses, float* lse, const bf16* logits, const int32_t* targets, int64_t N,
                           int V, cudaStream_t stream);
void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                           int V, cudaStream_t stream);

// dlogits (N, V) may equal logits (in place); lse (N) from the forward.
void cross_entropy_backward(bf16* dlogits, const bf16* logits, const float* lse, const int32_t* targets,
                            float dloss_weight, int64_t N, int V, cudaStream_t stream);
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            float dloss_weight, int64_t N, int V, cudaStream_t stream);

// The forward and the backward in one pass over the logits, in place: losses and lse as the
// forward writes them, and logits overwritten by dlogits as the backward writes them (the same
// values, bit for bit). Each row is read from memory once instead of twice, for training, where
// the logits are needed only to make dlogits.
void cross_entropy_forward_backward(float* losses, float* lse, bf16* logits, const int32_t* targets,
                                    float dloss_weight, int64_t N, int V, cudaStream_t stream);
void cross_entropy_forward_backward(float* losses, float* lse, float* logits, const int32_t* targets,
                                    float dloss_weight, int64_t N, int V, cudaStream_t stream);

namespace detail {
// Launchers of model/cross_entropy.cu; they return the launch status because .cu files cannot
// include core/check.h (nvcc 13 rejects fmt 9). For model/cross_entropy_cuda.cc only.
cudaError_t launch_cross_entropy_forward(float* losses, float* lse, const bf16* logits, const int32_t* targets,
                                         int64_t N, int V, cudaStream_t stream);
cudaError_t launch_cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                                         int64_t N, int V, cudaStream_t stream);
cudaError_t launch_cross_entropy_backward(bf16* dlogits, const bf16* logits, const float* lse,
                                          const int32_t* targets, float dloss_weight, int64_t N, int V,
                                          cudaStream_t stream);
cudaError_t launch_cross_entropy_backward(float* dlogits, const float* logits, const float* lse,
                                          const int32_t* targets, float dloss_weight, int64_t N, int V,
                                          cudaStream_t stream);
cudaError_t launch_cross_entropy_forward_backward(float* losses, float* lse, bf16* logits, const int32_t* targets,
                                                  float dloss_weight, int64_t N, int V, cudaStream_t stream);
cudaError_t launch_cross_entropy_forward_backward(float* losses, float* lse, float* logits, const int32_t* targets,
                                                  float dloss_weight, int64_t N, int V, cudaStream_t stream);
}  // namespace detail

}  // namespace dilatron
#endif
