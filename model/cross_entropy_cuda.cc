// Host side of the CUDA cross-entropy: argument checks and error reporting for the launchers in
// model/cross_entropy.cu.
#ifdef DILATRON_CUDA
#include "model/cross_entropy_cuda.h"

#include "core/check.h"
#include "core/cuda_check.h"

namespace dilatron {
namespace {

void check_shape(int64_t N, int V) {
  DILATRON_CHECK(N >= 0, "negative row count {}", N);
  DILATRON_CHECK(V > 0, "vocabulary size {} must be positive", V);
}

}  // namespace

void cross_entropy_forward(float* losses, float* lse, const bf16* logits, const int32_t* targets, int64_t N,
                           int V, cudaStream_t stream) {
  check_shape(N, V);
  if (N == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_cross_entropy_forward(losses, lse, logits, targets, N, V, stream));
}

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                           int V, cudaStream_t stream) {
  check_shape(N, V);
  if (N == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_cross_entropy_forward(losses, lse, logits, targets, N, V, stream));
}

void cross_entropy_backward(bf16* dlogits, const bf16* logits, const float* lse, const int32_t* targets,
                            float dloss_weight, int64_t N, int V, cudaStream_t stream) {
  check_shape(N, V);
  if (N == 0) return;
  DILATRON_CUDA_CHECK(
      detail::launch_cross_entropy_backward(dlogits, logits, lse, targets, dloss_weight, N, V, stream));
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            float dloss_weight, int64_t N, int V, cudaStream_t stream) {
  check_shape(N, V);
  if (N == 0) return;
  DILATRON_CUDA_CHECK(
      detail::launch_cross_entropy_backward(dlogits, logits, lse, targets, dloss_weight, N, V, stream));
}

void cross_entropy_forward_backward(float* losses, float* lse, bf16* logits, const int32_t* targets,
                                    float dloss_weight, int64_t N, int V, cudaStream_t stream) {
  check_shape(N, V);
  if (N == 0) return;
  DILATRON_CUDA_CHECK(
      detail::launch_cross_entropy_forward_backward(losses, lse, logits, targets, dloss_weight, N, V, stream));
}

void cross_entropy_forward_backward(float* losses, float* lse, float* logits, const int32_t* targets,
                                    float dloss_weight, int64_t N, int V, cudaStream_t stream) {
  check_shape(N, V);
  if (N == 0) return;
  DILATRON_CUDA_CHECK(
      detail::launch_cross_entropy_forward_backward(losses, lse, logits, targets, dloss_weight, N, V, stream));
}

}  // namespace dilatron
#endif
