// cuBLASLt calls of the GPU linear layer. cuBLAS is column-major: a row-major (R, C) matrix is
// a column-major (C, R) one with leading dimension C, so out^T (OC, N) = W (OC, IC) . inp^T (IC, N)
// reads W as a column-major (IC, OC) matrix transposed, and the bias (OC) runs along D's rows,
// which is what CUBLASLT_EPILOGUE_BIAS adds. The GELU epilogues' auxiliary matrix (the GELU
// input) has D's shape: pre^T (OC, N) in the forward, pre^T (IC, N) beside dinp^T in the backward.
#ifdef DILATRON_CUDA
#include "model/matmul_cuda.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "core/check.h"
#include "core/cuda_check.h"
#include "model/cublas_check.h"

namespace dilatron {

MatmulContext::MatmulContext(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  DILATRON_CUBLAS_CHECK(cublasLtCreate(&handle_));
  DILATRON_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

MatmulContext::~MatmulContext() {
  cudaFree(workspace_);
  cublasLtDestroy(handle_);
}

namespace {

template <typename T>
constexpr cudaDataType_t data_type();
template <>
constexpr cudaDataType_t data_type<bf16>() {
  return CUDA_R_16BF;
}
template <>
constexpr cudaDataType_t data_type<float>() {
  return CUDA_R_32F;
}

size_t element_bytes(cudaDataType_t type) { return type == CUDA_R_16BF ? 2 : 4; }

// The largest power of two dividing x, at most 256 (cuBLASLt's default assumption).
uint32_t power_of_two_dividing(uint64_t x) {
  uint32_t alignment = 256;
  while (alignment > 1 && x % alignment != 0) alignment /= 2;
  return alignment;
}

uint32_t alignment_of(const void* p) { return power_of_two_dividing(reinterpret_cast<uintptr_t>(p)); }

// A strided batch of `count` GEMMs: matrix i of A, B, D and the bias starts i * stride elements
// after the first; a stride of 0 hands every GEMM the same matrix.
struct Batch {
  int count = 1;
  int64_t a_stride = 0, b_stride = 0, d_stride = 0, bias_stride = 0;
};

// The alignment every matrix p + i * stride (i < count) of a batch has.
uint32_t alignment_of(const void* p, cudaDataType_t type, int count, int64_t stride) {
  const uint32_t first = alignment_of(p);
  if (count == 1) return first;
  return std::min(first, power_of_two_dividing(static_cast<uint64_t>(stride) * element_bytes(type)));
}

// A column-major operand: rows x cols, leading dimension ld.
struct Operand {
  const void* ptr;
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};

class Layout {
 public:
  Layout(const Operand& m, int batch_count, int64_t batch_stride) {
    DILATRON_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_, m.type, m.rows, m.cols, m.ld));
    if (batch_count > 1) {
      const int32_t count = batch_count;
      DILATRON_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(layout_, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
      DILATRON_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout_, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                             &batch_stride, sizeof batch_stride));
    }
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(layout_); }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;
  cublasLtMatrixLayout_t get() const { return layout_; }

 private:
  cublasLtMatrixLayout_t layout_ = nullptr;
};

class MatmulDesc {
 public:
  MatmulDesc() { DILATRON_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F)); }
  ~MatmulDesc() { cublasLtMatmulDescDestroy(desc_); }
  MatmulDesc(const MatmulDesc&) = delete;
  MatmulDesc& operator=(const MatmulDesc&) = delete;
  template <typename V>
  void set(cublasLtMatmulDescAttributes_t attribute, const V& value) {
    DILATRON_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, attribute, &value, sizeof value));
  }
  cublasLtMatmulDesc_t get() const { return desc_; }

 private:
  cublasLtMatmulDesc_t desc_ = nullptr;
};

class Preference {
 public:
  Preference() { DILATRON_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref_)); }
  ~Preference() { cublasLtMatmulPreferenceDestroy(pref_); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  template <typename V>
  void set(cublasLtMatmulPreferenceAttributes_t attribute, const V& value) {
    DILATRON_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref_, attribute, &value, sizeof value));
  }
  cublasLtMatmulPreference_t get() const { return pref_; }

 private:
  cublasLtMatmulPreference_t pref_ = nullptr;
};

// What the cuBLASLt epilogue does to the fp32 product before D is stored: add a bias (m), and
// optionally apply GELU (saving its input, the biased product, to aux) or multiply by GELU's
// derivative at aux (read). aux is an (m, n) matrix like D, with its own leading dimension.
struct Epilogue {
  const void* bias = nullptr;
  enum class Gelu { none, forward, backward } gelu = Gelu::none;
  const void* aux = nullptr;
  int64_t aux_ld = 0;

  cublasLtEpilogue_t kind() const {
    switch (gelu) {
      case Gelu::forward:
        return bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
      case Gelu::backward:
        return CUBLASLT_EPILOGUE_DGELU;
      case Gelu::none:
        break;
    }
    return bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  }
};

// D_i (m, n) = epilogue(op(A_i) (m, k) . op(B_i) (k, n) + beta * C_i) for i < batch.count,
// column-major, fp32 compute. C is D unless c is given (then laid out as D, not aliasing it), so
// beta = 1 accumulates in place.
void lt_matmul(const Operand& a, bool transpose_a, const Operand& b, bool transpose_b, void* d,
               const Operand& d_shape, float beta, const Epilogue& epilogue, const Batch& batch, MatmulContext& ctx,
               cudaStream_t stream, const void* c = nullptr) {
  if (c == nullptr) c = d;
  MatmulDesc desc;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue.kind());
  if (epilogue.bias != nullptr) {
    DILATRON_CHECK(alignment_of(epilogue.bias, d_shape.type, batch.count, batch.bias_stride) >= 16,
                   "cuBLASLt's bias epilogue needs every bias 16-byte aligned, got {} bias(es) from {}, {} elements "
                   "apart",
                   batch.count, epilogue.bias, batch.bias_stride);
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, epilogue.bias);
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, d_shape.type);
    if (batch.count > 1) desc.set(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, batch.bias_stride);
  }
  if (epilogue.gelu != Epilogue::Gelu::none) {
    // The GELU input's batch stride is never set: the GELU GEMMs are single.
    DILATRON_CHECK(batch.count == 1, "the GELU epilogues take no batch, got {}", batch.count);
    // cuBLASLt's documented rule for the GELU input matrix: leading dimension a multiple of 8.
    // Its alignment is checked as the bias's, so that a misaligned one fails here, by name.
    DILATRON_CHECK(epilogue.aux_ld % 8 == 0,
                   "cuBLASLt's GELU epilogue needs the GELU input's row length ({}) to be a multiple of 8",
                   epilogue.aux_ld);
    DILATRON_CHECK(alignment_of(epilogue.aux) >= 16,
                   "cuBLASLt's GELU epilogue needs a 16-byte aligned GELU input, got {}", epilogue.aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, epilogue.aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, epilogue.aux_ld);
  }
  const Layout a_layout(a, batch.count, batch.a_stride), b_layout(b, batch.count, batch.b_stride),
      d_layout(d_shape, batch.count, batch.d_stride);

  const uint32_t a_alignment = alignment_of(a.ptr, a.type, batch.count, batch.a_stride);
  const uint32_t b_alignment = alignment_of(b.ptr, b.type, batch.count, batch.b_stride);
  const uint32_t d_alignment = alignment_of(d, d_shape.type, batch.count, batch.d_stride);
  const uint32_t c_alignment = alignment_of(c, d_shape.type, batch.count, batch.d_stride);
  Preference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(ctx.workspace_bytes()));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, a_alignment);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, b_alignment);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, c_alignment);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, d_alignment);

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  DILATRON_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle(), desc.get(), a_layout.get(), b_layout.get(),
                                                       d_layout.get(), d_layout.get(), pref.get(), 1, &heuristic,
                                                       &found));
  DILATRON_CHECK(found > 0,
                 "cuBLASLt has no algorithm for D ({} x {}) = op(A) . op(B) with k = {}, lda {} ldb {} ldd {}, "
                 "alignments A {} B {} D {} bytes, epilogue {} (bias {}), batch of {} (strides A {} B {} D {})",
                 d_shape.rows, d_shape.cols, transpose_a ? a.rows : a.cols, a.ld, b.ld, d_shape.ld, a_alignment,
                 b_alignment, d_alignment, static_cast<int>(epilogue.kind()), epilogue.bias != nullptr, batch.count,
                 batch.a_stride, batch.b_stride, batch.d_stride);
  const float alpha = 1.0f;
  DILATRON_CUBLAS_CHECK(cublasLtMatmul(ctx.handle(), desc.get(), &alpha, a.ptr, a_layout.get(), b.ptr,
                                       b_layout.get(), &beta, c, d_layout.get(), d, d_layout.get(),
                                       &heuristic.algo, ctx.workspace(), ctx.workspace_bytes(), stream));
}

// `count` linear layers that share one input; layer i's output (or output gradient) starts at
// out + i * out_stride.
struct Layers {
  int count = 1;
  int64_t out_stride = 0;
};

void check_shape(int64_t N, int IC, int OC, const Layers& layers) {
  DILATRON_CHECK(N >= 0 && IC > 0 && OC > 0, "bad matmul shape N {} IC {} OC {}", N, IC, OC);
  DILATRON_CHECK(N <= std::numeric_limits<int32_t>::max(), "N {} exceeds cuBLASLt's int32 dimensions", N);
  DILATRON_CHECK(layers.count >= 1 && (layers.count == 1 || layers.out_stride >= N * OC),
                 "bad matmul batch: {} layers of N {} x OC {} outputs, {} elements apart", layers.count, N, OC,
                 layers.out_stride);
}

// out_i^T (OC, N) = (W_i as (IC, OC))^T . (inp as (IC, N)) [+ residual^T], then the epilogue.
template <typename T>
void forward(T* out, const T* inp, const T* weight, int64_t N, int IC, int OC, const Epilogue& epilogue,
             const Layers& layers, MatmulContext& ctx, cudaStream_t stream, const T* residual = nullptr) {
  check_shape(N, IC, OC, layers);
  if (N == 0) return;
  const auto n = static_cast<uint64_t>(N);
  const cudaDataType_t t = data_type<T>();
  const int64_t weight_numel = static_cast<int64_t>(OC) * IC;
  const Batch batch{.count = layers.count, .a_stride = weight_numel, .d_stride = layers.out_stride, .bias_stride = OC};
  lt_matmul({weight, t, uint64_t(IC), uint64_t(OC), IC}, true, {inp, t, uint64_t(IC), n, IC}, false, out,
            {out, t, uint64_t(OC), n, OC}, residual != nullptr ? 1.0f : 0.0f, epilogue, batch, ctx, stream, residual);
}

// dinp^T (IC, N) = epilogue(sum_i (W_i as (IC, OC)) . (dout_i as (OC, N)) [+ dinp^T]), one GEMM
// per layer, then dweight and dbias of all layers.
template <typename T>
void backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight, int64_t N,
              int IC, int OC, const Layers& layers, float dinp_beta, const Epilogue& dinp_epilogue,
              MatmulContext& ctx, cudaStream_t stream) {
  check_shape(N, IC, OC, layers);
  // An epilogue would apply to each partial sum, not to the total.
  DILATRON_CHECK(layers.count == 1 || dinp_epilogue.kind() == CUBLASLT_EPILOGUE_DEFAULT,
                 "a dinp epilogue takes one layer, got {}", layers.count);
  if (N == 0) return;
  const auto n = static_cast<uint64_t>(N);
  const cudaDataType_t t = data_type<T>();
  const int64_t weight_numel = static_cast<int64_t>(OC) * IC;
  for (int i = 0; i < layers.count; ++i) {
    const T* weight_i = weight + i * weight_numel;
    const T* dout_i = dout + i * layers.out_stride;
    lt_matmul({weight_i, t, uint64_t(IC), uint64_t(OC), IC}, false, {dout_i, t, uint64_t(OC), n, OC}, false, dinp,
              {dinp, t, uint64_t(IC), n, IC}, i == 0 ? dinp_beta : 1.0f, dinp_epilogue, Batch{}, ctx, stream);
  }
  // dW_i^T (IC, OC) += (inp as (IC, N)) . (dout_i as (OC, N))^T, in fp32, as one batched GEMM:
  // with few output tiles per layer (768 x 768 for GPT-2's q, k, v) one GEMM alone leaves SMs idle.
  const Batch batch{.count = layers.count, .b_stride = layers.out_stride, .d_stride = weight_numel};
  lt_matmul({inp, t, uint64_t(IC), n, IC}, false, {dout, t, uint64_t(OC), n, OC}, true, dweight,
            {dweight, CUDA_R_32F, uint64_t(IC), uint64_t(OC), IC}, 1.0f, Epilogue{}, batch, ctx, stream);
  // Our column sums rather than cuBLASLt's BGRAD epilogues: those overwrite the bias gradient,
  // and ours accumulates (+=) in fp32 across micro-batches. Their partials use the workspace,
  // which the GEMMs queued before them on this stream are done with when they run.
  if (dbias != nullptr) {
    DILATRON_CHECK(ctx.workspace_bytes() >= OC * sizeof(float),
                   "the matmul workspace ({} bytes) holds less than one bias gradient of {} floats",
                   ctx.workspace_bytes(), OC);
    DILATRON_CUDA_CHECK(detail::launch_add_column_sums(
        dbias, dout, N, OC, layers.count, layers.out_stride, static_cast<float*>(ctx.workspace()),
        static_cast<int64_t>(ctx.workspace_bytes() / sizeof(float)), stream));
  }
}

float dinp_beta(DinpRule rule) { return rule == DinpRule::accumulate ? 1.0f : 0.0f; }

}  // namespace

void matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N, int IC, int OC,
                    MatmulContext& ctx, cudaStream_t stream) {
  forward(out, inp, weight, N, IC, OC, Epilogue{.bias = bias}, Layers{}, ctx, stream);
}
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC,
                    int OC, MatmulContext& ctx, cudaStream_t stream) {
  forward(out, inp, weight, N, IC, OC, Epilogue{.bias = bias}, Layers{}, ctx, stream);
}
void matmul_forward_residual(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, const bf16* residual,
                             int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream) {
  DILATRON_CHECK(residual != out, "matmul_forward_residual: the residual must not be the output");
  forward(out, inp, weight, N, IC, OC, Epilogue{.bias = bias}, Layers{}, ctx, stream, residual);
}
void matmul_forward_residual(float* out, const float* inp, const float* weight, const float* bias,
                             const float* residual, int64_t N, int IC, int OC, MatmulContext& ctx,
                             cudaStream_t stream) {
  DILATRON_CHECK(residual != out, "matmul_forward_residual: the residual must not be the output");
  forward(out, inp, weight, N, IC, OC, Epilogue{.bias = bias}, Layers{}, ctx, stream, residual);
}
void matmul_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* weight, int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream,
                     DinpRule rule) {
  backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, Layers{}, dinp_beta(rule), Epilogue{}, ctx, stream);
}
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream,
                     DinpRule rule) {
  backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, Layers{}, dinp_beta(rule), Epilogue{}, ctx, stream);
}

void matmul_forward_batched(bf16* out, int64_t out_stride, const bf16* inp, const bf16* weight, const bf16* bias,
                            int64_t N, int IC, int OC, int batch, MatmulContext& ctx, cudaStream_t stream) {
  forward(out, inp, weight, N, IC, OC, Epilogue{.bias = bias}, Layers{batch, out_stride}, ctx, stream);
}
void matmul_forward_batched(float* out, int64_t out_stride, const float* inp, const float* weight,
                            const float* bias, int64_t N, int IC, int OC, int batch, MatmulContext& ctx,
                            cudaStream_t stream) {
  forward(out, inp, weight, N, IC, OC, Epilogue{.bias = bias}, Layers{batch, out_stride}, ctx, stream);
}
void matmul_backward_batched(bf16* dinp, float* dweight, float* dbias, const bf16* dout, int64_t dout_stride,
                             const bf16* inp, const bf16* weight, int64_t N, int IC, int OC, int batch,
                             MatmulContext& ctx, cudaStream_t stream, DinpRule rule) {
  backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, Layers{batch, dout_stride}, dinp_beta(rule),
           Epilogue{}, ctx, stream);
}
void matmul_backward_batched(float* dinp, float* dweight, float* dbias, const float* dout, int64_t dout_stride,
                             const float* inp, const float* weight, int64_t N, int IC, int OC, int batch,
                             MatmulContext& ctx, cudaStream_t stream, DinpRule rule) {
  backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, Layers{batch, dout_stride}, dinp_beta(rule),
           Epilogue{}, ctx, stream);
}

void matmul_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N,
                         int IC, int OC, MatmulContext& ctx, cudaStream_t stream) {
  const Epilogue gelu{.bias = bias, .gelu = Epilogue::Gelu::forward, .aux = pre, .aux_ld = OC};
  forward(out, inp, weight, N, IC, OC, gelu, Layers{}, ctx, stream);
}
void matmul_gelu_forward(float* out, float* pre, const float* inp, const float* weight, const float* bias,
                         int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream) {
  const Epilogue gelu{.bias = bias, .gelu = Epilogue::Gelu::forward, .aux = pre, .aux_ld = OC};
  forward(out, inp, weight, N, IC, OC, gelu, Layers{}, ctx, stream);
}
void matmul_backward_dgelu(bf16* dpre, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                           const bf16* pre, const bf16* weight, int64_t N, int IC, int OC, MatmulContext& ctx,
                           cudaStream_t stream) {
  const Epilogue dgelu{.gelu = Epilogue::Gelu::backward, .aux = pre, .aux_ld = IC};
  backward(dpre, dweight, dbias, dout, inp, weight, N, IC, OC, Layers{}, 0.0f, dgelu, ctx, stream);
}
void matmul_backward_dgelu(float* dpre, float* dweight, float* dbias, const float* dout, const float* inp,
                           const float* pre, const float* weight, int64_t N, int IC, int OC, MatmulContext& ctx,
                           cudaStream_t stream) {
  const Epilogue dgelu{.gelu = Epilogue::Gelu::backward, .aux = pre, .aux_ld = IC};
  backward(dpre, dweight, dbias, dout, inp, weight, N, IC, OC, Layers{}, 0.0f, dgelu, ctx, stream);
}

}  // namespace dilatron
#endif
