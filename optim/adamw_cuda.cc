// Host side of the CUDA AdamW: checks, the segment table's upload and error reporting, which the
// .cu cannot do itself.
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

AdamWSegmentTable::AdamWSegmentTable(const std::vector<AdamWSegment>& segments, cudaStream_t stream) {
  const std::vector<AdamWChunk> chunks = adamw_chunks(segments, detail::kAdamWChunkElements);
  if (chunks.empty()) return;
  chunks_ = DeviceArray<AdamWChunk>(static_cast<int64_t>(chunks.size()), stream);
  DILATRON_CUDA_CHECK(cudaMemcpyAsync(chunks_.data(), chunks.data(), chunks.size() * sizeof(AdamWChunk),
                                      cudaMemcpyHostToDevice, stream));
  // Waiting lets any stream use the table at once; it happens once per training run.
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void adamw_update_segments_cuda(float* param, const float* grad, float* m, float* v,
                                const AdamWSegmentTable& table, const AdamWStep& s, cudaStream_t stream) {
  DILATRON_CUDA_CHECK(detail::launch_adamw_segments(param, grad, m, v, table.chunks(), table.num_chunks(),
                                                    detail::adamw_scalars(s), stream));
}

}  // namespace dilatron
#endif
