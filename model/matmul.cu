// Bias gradient of the linear layer: dbias (OC) += column sums of dout (N, OC), for `batch` such
// layers (layer b's dout at dout + b * dout_stride, its dbias at dbias + b * OC), by the
// deterministic two-stage reduction of model/column_sums.cuh, one per layer.
#include <cuda_bf16.h>

#include "core/device_type.h"
#include "model/column_sums.cuh"
#include "model/cuda_math.cuh"
#include "model/cuda_pack.cuh"
#include "model/matmul_cuda.h"

namespace dilatron {
namespace {

namespace cs = gpu::column_sums;

// The one column sum of the bias gradient: dout itself.
template <typename T, int kVec>
struct BiasGradTerms {
  static constexpr int kCount = 1;
  const T* dout;
  int C;

  __device__ __forceinline__ void add(int64_t n, int c0, float (&acc)[kCount][kVec]) const {
    const gpu::Pack<T, kVec> dy = gpu::load_pack<kVec>(dout + n * C + c0);
#pragma unroll
    for (int j = 0; j < kVec; ++j) acc[0][j] += gpu::to_float(dy.v[j]);
  }
};

template <typename T>
cudaError_t add_column_sums(float* dbias, const T* dout, int64_t N, int OC, int batch, int64_t dout_stride,
                            float* scratch, int64_t scratch_floats, cudaStream_t stream) {
  const cs::RowSplits splits = cs::row_splits(N, scratch_floats / OC);
  constexpr int kVec = gpu::kPack16<T>;
  for (int b = 0; b < batch; ++b) {
    const T* dout_b = dout + b * dout_stride;
    const cs::Outputs<1> outputs{{dbias + static_cast<int64_t>(b) * OC}};
    const cudaError_t err =
        gpu::rows_aligned_16(dout_b, OC)
            ? cs::launch<kVec>(outputs, BiasGradTerms<T, kVec>{dout_b, OC}, N, OC, splits, scratch, stream)
            : cs::launch<1>(outputs, BiasGradTerms<T, 1>{dout_b, OC}, N, OC, splits, scratch, stream);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace

namespace detail {

cudaError_t launch_add_column_sums(float* dbias, const bf16* dout, int64_t N, int OC, int batch, int64_t dout_stride,
                                   float* scratch, int64_t scratch_floats, cudaStream_t stream) {
  return add_column_sums(dbias, device_ptr(dout), N, OC, batch, dout_stride, scratch, scratch_floats, stream);
}
cudaError_t launch_add_column_sums(float* dbias, const float* dout, int64_t N, int OC, int batch, int64_t dout_stride,
                                   float* scratch, int64_t scratch_floats, cudaStream_t stream) {
  return add_column_sums(dbias, dout, N, OC, batch, dout_stride, scratch, scratch_floats, stream);
}

}  // namespace detail
}  // namespace dilatron
