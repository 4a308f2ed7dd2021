// Host side of the CUDA sum of squares and scaling: scratch memory, the copy back and error reporting.
#ifdef DILATRON_CUDA
#include "core/check.h"
#include "core/cuda_check.h"
#include "optim/cuda_kernels.h"
#include "optim/grad_norm.h"

namespace dilatron {

double sum_of_squares_cuda(const float* x, int64_t n, cudaStream_t stream) {
  DILATRON_CHECK(n >= 0, "negative size {}", n);
  if (n == 0) return 0.0;
  const int partials = detail::sum_of_squares_partials(n);
  double* scratch = nullptr;  // (partials + 1): the partial sums, then the total
  DILATRON_CUDA_CHECK(cudaMallocAsync(&scratch, (partials + 1) * sizeof(double), stream));
  const cudaError_t launched = detail::launch_sum_of_squares(x, n, scratch, scratch + partials, stream);
  double total = 0.0;
  const cudaError_t copied =
      launched == cudaSuccess
          ? cudaMemcpyAsync(&total, scratch + partials, sizeof(double), cudaMemcpyDeviceToHost, stream)
          : launched;
  DILATRON_CUDA_CHECK(cudaFreeAsync(scratch, stream));
  DILATRON_CUDA_CHECK(copied);
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream));
  return total;
}

void scale_cuda(float* x, int64_t n, float factor, cudaStream_t stream) {
  DILATRON_CHECK(n >= 0, "negative size {}", n);
  if (n == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_scale(x, n, factor, stream));
}

}  // namespace dilatron
#endif
