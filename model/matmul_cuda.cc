// cuBLASLt calls of the GPU linear layer. cuBLAS is column-major: a row-major (R, C) matrix is
// a column-major (C, R) one with leading dimension C, so out^T (OC, N) = W (OC, IC) . inp^T (IC, N)
// reads W as a column-major (IC, OC) matrix transposed, and the bias (OC) runs along D's rows,
// which is what CUBLASLT_EPILOGUE_BIAS adds. The GELU epilogues' auxiliary matrix (the GELU
// input) has D's shape: pre^T (OC, N) in the forward, pre^T (IC, N) beside dinp^T in the backward.
#ifdef DILATRON_CUDA
#include "model/matmul_cuda.h"

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

// The largest power of two dividing the address, at most 256 (cuBLASLt's default assumption).
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
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
  explicit Layout(const Operand& m) {
    DILATRON_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_, m.type, m.rows, m.cols, m.ld));
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

// D (m, n) = epilogue(op(A) (m, k) . op(B) (k, n) + beta * D), column-major, fp32 compute.
// D doubles as C, so beta = 1 accumulates in place.
void lt_matmul(const Operand& a, bool transpose_a, const Operand& b, bool transpose_b, void* d,
               const Operand& d_shape, float beta, const Epilogue& epilogue, MatmulContext& ctx,
               cudaStream_t stream) {
  MatmulDesc desc;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue.kind());
  if (epilogue.bias != nullptr) {
    DILATRON_CHECK(alignment_of(epilogue.bias) >= 16,
                   "cuBLASLt's bias epilogue needs a 16-byte aligned bias, got {}", epilogue.bias);
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, epilogue.bias);
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, d_shape.type);
  }
  if (epilogue.gelu != Epilogue::Gelu::none) {
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
  const Layout a_layout(a), b_layout(b), d_layout(d_shape);

  Preference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(ctx.workspace_bytes()));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_of(a.ptr));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_of(b.ptr));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_of(d));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_of(d));

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  DILATRON_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle(), desc.get(), a_layout.get(), b_layout.get(),
                                                       d_layout.get(), d_layout.get(), pref.get(), 1, &heuristic,
                                                       &found));
  DILATRON_CHECK(found > 0,
                 "cuBLASLt has no algorithm for D ({} x {}) = op(A) . op(B) with k = {}, lda {} ldb {} ldd {}, "
                 "alignments A {} B {} D {} bytes, epilogue {} (bias {})",
                 d_shape.rows, d_shape.cols, transpose_a ? a.rows : a.cols, a.ld, b.ld, d_shape.ld,
                 alignment_of(a.ptr), alignment_of(b.ptr), alignment_of(d), static_cast<int>(epilogue.kind()),
                 epilogue.bias != nullptr);
  const float alpha = 1.0f;
  DILATRON_CUBLAS_CHECK(cublasLtMatmul(ctx.handle(), desc.get(), &alpha, a.ptr, a_layout.get(), b.ptr,
                                       b_layout.get(), &beta, d, d_layout.get(), d, d_layout.get(),
                                       &heuristic.algo, ctx.workspace(), ctx.workspace_bytes(), stream));
}

void check_shape(int64_t N, int IC, int OC) {
  DILATRON_CHECK(N >= 0 && IC > 0 && OC > 0, "bad matmul shape N {} IC {} OC {}", N, IC, OC);
  DILATRON_CHECK(N <= std::numeric_limits<int32_t>::max(), "N {} exceeds cuBLASLt's int32 dimensions", N);
}

// out^T (OC, N) = (W as (IC, OC))^T . (inp as (IC, N)), then the epilogue.
template <typename T>
void forward(T* out, const T* inp, const T* weight, int64_t N, int IC, int OC, const Epilogue& epilogue,
             MatmulContext& ctx, cudaStream_t stream) {
  check_shape(N, IC, OC);
  if (N == 0) return;
  const auto n = static_cast<uint64_t>(N);
  const cudaDataType_t t = data_type<T>();
  lt_matmul({weight, t, uint64_t(IC), uint64_t(OC), IC}, true, {inp, t, uint64_t(IC), n, IC}, false, out,
            {out, t, uint64_t(OC), n, OC}, 0.0f, epilogue, ctx, stream);
}

// dinp^T (IC, N) = epilogue((W as (IC, OC)) . (dout as (OC, N)) [+ dinp^T]), then dweight and dbias.
template <typename T>
void backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight, int64_t N,
              int IC, int OC, float dinp_beta, const Epilogue& dinp_epilogue, MatmulContext& ctx,
              cudaStream_t stream) {
  check_shape(N, IC, OC);
  if (N == 0) return;
  const auto n = static_cast<uint64_t>(N);
  const cudaDataType_t t = data_type<T>();
  lt_matmul({weight, t, uint64_t(IC), uint64_t(OC), IC}, false, {dout, t, uint64_t(OC), n, OC}, false, dinp,
            {dinp, t, uint64_t(IC), n, IC}, dinp_beta, dinp_epilogue, ctx, stream);
  // dW^T (IC, OC) += (inp as (IC, N)) . (dout as (OC, N))^T, in fp32.
  lt_matmul({inp, t, uint64_t(IC), n, IC}, false, {dout, t, uint64_t(OC), n, OC}, true, dweight,
            {dweight, CUDA_R_32F, uint64_t(IC), uint64_t(OC), IC}, 1.0f, Epilogue{}, ctx, stream);
  // Our column-sum kernel rather than cuBLASLt's BGRAD epilogues: those overwrite the bias
  // gradient, and ours accumulates (+=) in fp32 across micro-batches.
  if (dbias != nullptr) DILATRON_CUDA_CHECK(detail::launch_add_column_sums(dbias, dout, N, OC, stream));
}

}  // namespace

void matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N, int IC, int OC,
                    MatmulContext& ctx, cudaStream_t stream) {
  forward(out, inp, weight, N, IC, OC, Epilogue{.bias = bias}, ctx, stream);
}
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC,
                    int OC, MatmulContext& ctx, cudaStream_t stream) {
  forward(out, inp, weight, N, IC, OC, Epilogue{.bias = bias}, ctx, stream);
}
void matmul_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* weight, int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream,
                     DinpRule rule) {
  backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, rule == DinpRule::accumulate ? 1.0f : 0.0f,
           Epilogue{}, ctx, stream);
}
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream,
                     DinpRule rule) {
  backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, rule == DinpRule::accumulate ? 1.0f : 0.0f,
           Epilogue{}, ctx, stream);
}

void matmul_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N,
                         int IC, int OC, MatmulContext& ctx, cudaStream_t stream) {
  const Epilogue gelu{.bias = bias, .gelu = Epilogue::Gelu::forward, .aux = pre, .aux_ld = OC};
  forward(out, inp, weight, N, IC, OC, gelu, ctx, stream);
}
void matmul_gelu_forward(float* out, float* pre, const float* inp, const float* weight, const float* bias,
                         int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream) {
  const Epilogue gelu{.bias = bias, .gelu = Epilogue::Gelu::forward, .aux = pre, .aux_ld = OC};
  forward(out, inp, weight, N, IC, OC, gelu, ctx, stream);
}
void matmul_backward_dgelu(bf16* dpre, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                           const bf16* pre, const bf16* weight, int64_t N, int IC, int OC, MatmulContext& ctx,
                           cudaStream_t stream) {
  const Epilogue dgelu{.gelu = Epilogue::Gelu::backward, .aux = pre, .aux_ld = IC};
  backward(dpre, dweight, dbias, dout, inp, weight, N, IC, OC, 0.0f, dgelu, ctx, stream);
}
void matmul_backward_dgelu(float* dpre, float* dweight, float* dbias, const float* dout, const float* inp,
                           const float* pre, const float* weight, int64_t N, int IC, int OC, MatmulContext& ctx,
                           cudaStream_t stream) {
  const Epilogue dgelu{.gelu = Epilogue::Gelu::backward, .aux = pre, .aux_ld = IC};
  backward(dpre, dweight, dbias, dout, inp, weight, N, IC, OC, 0.0f, dgelu, ctx, stream);
}

}  // namespace dilatron
#endif
