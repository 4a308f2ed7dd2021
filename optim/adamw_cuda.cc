// Host side of the CUDA AdamW: checks and error reporting, which the .cu cannot do itself.
#ifdef DILATRON_CUDA
#include "core/check.h"
#include "core/cuda_check.h"
#include "optim/adamw.h"
#include "optim/cuda_kernels.h"

namespace dilatron {

void adamw_update_cuda(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s,
                       cudaStream_t stream) {
  DILATRON_CHECK(n >= 0, "negative size {}", n);
  if (n == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_adamw(param, grad, m, v, n, detail::adamw_scalars(s), stream));
}

}  // namespace dilatron
#endif
