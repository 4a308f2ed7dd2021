// Linear layer on the GPU through cuBLASLt, the CUDA twin of model/matmul.h (same names, plus a
// MatmulContext and a stream): out (N, OC) = inp (N, IC) . weight (OC, IC)^T + bias (OC).
// Products accumulate in fp32 (CUBLAS_COMPUTE_32F, no TF32) for both the bf16 and fp32 overloads;
// the bias is added in the cuBLASLt epilogue. All pointers are device pointers. The MLP's GELU
// (model/gelu.h) can be fused into the epilogues too: matmul_gelu_forward, matmul_backward_dgelu.
// Several layers that share one input (q, k, v) run as strided-batched GEMMs: matmul_*_batched.
//
// Gradient rule, which differs from the CPU version in one place: dinp is WRITTEN by default
// (DinpRule::accumulate adds into it, in the GEMM itself, for products that share one input),
// while dweight and dbias are fp32 and ACCUMULATED (+=), as on the CPU. dbias may be null (no
// bias).
//
// Alignment: any element-aligned pointer works: the alignment each pointer actually has (for a
// batch, the least over its matrices) is passed to the cuBLASLt heuristic, which then picks only
// kernels that can handle it. Two checks throw
// with the shapes in the message: a bias pointer that is not 16-byte aligned (the epilogue reads
// it in 16-byte vectors), and a shape for which cuBLASLt offers no algorithm at all. The GELU
// functions add cuBLASLt's rules for the GELU input (pre): 16-byte aligned, and a row length that
// is a multiple of 8.
#pragma once

#ifdef DILATRON_CUDA
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/bf16.h"

namespace dilatron {

// The cuBLASLt handle and its workspace, made once before the step loop: the matmuls themselves
// never allocate. One context per stream at a time (the workspace is shared by its calls).
class MatmulContext {
 public:
  // 32 MiB is what NVIDIA recommends as cuBLASLt workspace on Hopper.
  explicit MatmulContext(size_t workspace_bytes = size_t{32} << 20);
  ~MatmulContext();
  MatmulContext(const MatmulContext&) = delete;
  MatmulContext& operator=(const MatmulContext&) = delete;

  cublasLtHandle_t handle() const { return handle_; }
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return workspace_bytes_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

// bias (OC) may be null.
void matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N, int IC, int OC,
                    MatmulContext& ctx, cudaStream_t stream);
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC,
                    int OC, MatmulContext& ctx, cudaStream_t stream);

// out (N, OC) = inp . weight^T + bias + residual (N, OC): a transformer block's residual add in
// the GEMM (cuBLASLt's C operand), so out is written once instead of written, read back and
// rewritten by a separate add, and rounded to T once. residual must not be out; bias may be null.
void matmul_forward_residual(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, const bf16* residual,
                             int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream);
void matmul_forward_residual(float* out, const float* inp, const float* weight, const float* bias,
                             const float* residual, int64_t N, int IC, int OC, MatmulContext& ctx,
                             cudaStream_t stream);

enum class DinpRule { write, accumulate };

// dinp (N, IC) = (or +=) dout . weight; dweight (OC, IC) += dout^T . inp; dbias (OC) += column sums of
// dout (N, OC).
void matmul_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* weight, int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream,
                     DinpRule rule = DinpRule::write);
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream,
                     DinpRule rule = DinpRule::write);

// `batch` linear layers that share one input, as one cuBLASLt strided-batched GEMM (the q, k and v
// projections): out_i (N, OC) = inp . W_i^T + b_i for i < batch, with out_i = out + i * out_stride,
// W_i = weight + i * OC * IC (the layers' weights stacked as one (batch OC, IC) matrix) and
// b_i = bias + i * OC (bias may be null). out_stride >= N * OC; with a bias, OC * sizeof(T) must
// be a multiple of 16 (every b_i is read in 16-byte vectors).
void matmul_forward_batched(bf16* out, int64_t out_stride, const bf16* inp, const bf16* weight, const bf16* bias,
                            int64_t N, int IC, int OC, int batch, MatmulContext& ctx, cudaStream_t stream);
void matmul_forward_batched(float* out, int64_t out_stride, const float* inp, const float* weight,
                            const float* bias, int64_t N, int IC, int OC, int batch, MatmulContext& ctx,
                            cudaStream_t stream);

// Backward of matmul_forward_batched, with dout_i = dout + i * dout_stride, dweight_i = dweight +
// i * OC * IC and dbias_i = dbias + i * OC: dweight_i += dout_i^T . inp in one strided-batched GEMM,
// dbias_i += column sums of dout_i in one launch (dbias may be null), and dinp (N, IC) = (or +=,
// by rule) sum_i dout_i . W_i in `batch` GEMMs, the later ones adding into dinp. (One GEMM over
// K = batch OC would need the dout_i interleaved as one (N, batch OC) matrix.)
void matmul_backward_batched(bf16* dinp, float* dweight, float* dbias, const bf16* dout, int64_t dout_stride,
                             const bf16* inp, const bf16* weight, int64_t N, int IC, int OC, int batch,
                             MatmulContext& ctx, cudaStream_t stream, DinpRule rule = DinpRule::write);
void matmul_backward_batched(float* dinp, float* dweight, float* dbias, const float* dout, int64_t dout_stride,
                             const float* inp, const float* weight, int64_t N, int IC, int OC, int batch,
                             MatmulContext& ctx, cudaStream_t stream, DinpRule rule = DinpRule::write);

// The first layer of the MLP and its GELU in one GEMM: pre (N, OC) = inp . weight^T + bias and
// out (N, OC) = GELU(pre), both written. GELU runs in the epilogue on the fp32 accumulator; pre,
// the epilogue's auxiliary output, is kept for the backward. OC must be a multiple of 8.
// cuBLASLt's GELU is the tanh approximation of model/gelu.h (kernels_gpu_test tells it from the
// erf GELU), so fused and separate kernels compute the same function.
void matmul_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N,
                         int IC, int OC, MatmulContext& ctx, cudaStream_t stream);
void matmul_gelu_forward(float* out, float* pre, const float* inp, const float* weight, const float* bias,
                         int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream);

// Backward of the layer that reads inp (N, IC) = GELU(pre), through that GELU: dpre (N, IC) =
// (dout . weight) * GELU'(pre), WRITTEN, by the epilogue of the dinp GEMM (no separate dinp);
// dweight (OC, IC) += dout^T . inp and dbias (OC) += column sums of dout, as matmul_backward. IC
// must be a multiple of 8.
void matmul_backward_dgelu(bf16* dpre, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                           const bf16* pre, const bf16* weight, int64_t N, int IC, int OC, MatmulContext& ctx,
                           cudaStream_t stream);
void matmul_backward_dgelu(float* dpre, float* dweight, float* dbias, const float* dout, const float* inp,
                           const float* pre, const float* weight, int64_t N, int IC, int OC, MatmulContext& ctx,
                           cudaStream_t stream);

namespace detail {
// dbias_b (OC) += sum over rows of dout_b (N, OC), in fp32, for b < batch, with dout_b = dout +
// b * dout_stride and dbias_b = dbias + b * OC. The fp32 partial sums go to `scratch` (a device
// buffer of scratch_floats >= OC floats that nothing else uses until these kernels have run:
// matmul_backward hands over its cuBLASLt workspace, idle once the GEMMs are queued); fewer
// floats mean fewer row splits, never a wrong sum. From model/matmul.cu, which cannot include
// core/check.h (nvcc 13 rejects fmt 9), hence the returned status.
cudaError_t launch_add_column_sums(float* dbias, const bf16* dout, int64_t N, int OC, int batch, int64_t dout_stride,
                                   float* scratch, int64_t scratch_floats, cudaStream_t stream);
cudaError_t launch_add_column_sums(float* dbias, const float* dout, int64_t N, int OC, int batch, int64_t dout_stride,
                                   float* scratch, int64_t scratch_floats, cudaStream_t stream);
}  // namespace detail

}  // namespace dilatron
#endif
