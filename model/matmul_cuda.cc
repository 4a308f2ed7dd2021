// cuBLASLt calls of the GPU linear layer. cuBLAS is column-major: a row-major (R, C) matrix is
// a column-major (C, R) one with leading dimension C, so out^T (OC, N) = W (OC, IC) . inp^T (IC, N)
// reads W as a column-major (IC, OC) matrix transposed, and the bias (OC) runs along D's rows,
// which is what CUBLASLT_EPILOGUE_BIAS adds.
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

// D (m, n) = op(A) (m, k) . op(B) (k, n) + beta * D [+ bias (m)], column-major, fp32 compute.
// D doubles as C, so beta = 1 accumulates in place.
void lt_matmul(const Operand& a, bool transpose_a, const Operand& b, bool transpose_b, void* d,
               const Operand& d_shape, float beta, const void* bias, MatmulContext& ctx, cudaStream_t stream) {
  MatmulDesc desc;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N);
  if (bias != nullptr) {
    DILATRON_CHECK(alignment_of(bias) >= 16, "cuBLASLt's bias epilogue needs a 16-byte aligned bias, got {}",
                   bias);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, d_shape.type);
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
                 "alignments A {} B {} D {} bytes, bias {}",
                 d_shape.rows, d_shape.cols, transpose_a ? a.rows : a.cols, a.ld, b.ld, d_shape.ld,
                 alignment_of(a.ptr), alignment_of(b.ptr), alignment_of(d), bias != nullptr);
  const float alpha = 1.0f;
  DILATRON_CUBLAS_CHECK(cublasLtMatmul(ctx.handle(), desc.get(), &alpha, a.ptr, a_layout.get(), b.ptr,
                                       b_layout.get(), &beta, d, d_layout.get(), d, d_layout.get(),
                                       &heuristic.algo, ctx.workspace(), ctx.workspace_bytes(), stream));
}

void check_shape(int64_t N, int IC, int OC) {
  DILATRON_CHECK(N >= 0 && IC > 0 && OC > 0, "bad matmul shape N {} IC {} OC {}", N, IC, OC);
  DILATRON_CHECK(N <= std::numeric_limits<int32_t>::max(), "N {} exceeds cuBLASLt's int32 dimensions", N);
}

template <typename T>
void forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int IC, int OC, MatmulContext& ctx,
             cudaStream_t stream) {
  check_shape(N, IC, OC);
  if (N == 0) return;
  const auto n = static_cast<uint64_t>(N);
  const cudaDataType_t t = data_type<T>();
  // out^T (OC, N) = (W as (IC, OC))^T . (inp as (IC, N)).
  lt_matmul({weight, t, uint64_t(IC), uint64_t(OC), IC}, true, {inp, t, uint64_t(IC), n, IC}, false, out,
            {out, t, uint64_t(OC), n, OC}, 0.0f, bias, ctx, stream);
}

template <typename T>
void backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight, int64_t N,
              int IC, int OC, MatmulContext& ctx, cudaStream_t stream, DinpRule rule) {
  check_shape(N, IC, OC);
  if (N == 0) return;
  const auto n = static_cast<uint64_t>(N);
  const cudaDataType_t t = data_type<T>();
  // dinp^T (IC, N) = (W as (IC, OC)) . (dout as (OC, N)) [+ dinp^T].
  lt_matmul({weight, t, uint64_t(IC), uint64_t(OC), IC}, false, {dout, t, uint64_t(OC), n, OC}, false, dinp,
            {dinp, t, uint64_t(IC), n, IC}, rule == DinpRule::accumulate ? 1.0f : 0.0f, nullptr, ctx, stream);
  // dW^T (IC, OC) += (inp as (IC, N)) . (dout as (OC, N))^T, in fp32.
  lt_matmul({inp, t, uint64_t(IC), n, IC}, false, {dout, t, uint64_t(OC), n, OC}, true, dweight,
            {dweight, CUDA_R_32F, uint64_t(IC), uint64_t(OC), IC}, 1.0f, nullptr, ctx, stream);
  if (dbias != nullptr) DILATRON_CUDA_CHECK(detail::launch_add_column_sums(dbias, dout, N, OC, stream));
}

}  // namespace

void matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int64_t N, int IC, int OC,
                    MatmulContext& ctx, cudaStream_t stream) {
  forward(out, inp, weight, bias, N, IC, OC, ctx, stream);
}
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC,
                    int OC, MatmulContext& ctx, cudaStream_t stream) {
  forward(out, inp, weight, bias, N, IC, OC, ctx, stream);
}
void matmul_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                     const bf16* weight, int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream,
                     DinpRule rule) {
  backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, ctx, stream, rule);
}
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int IC, int OC, MatmulContext& ctx, cudaStream_t stream,
                     DinpRule rule) {
  backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, ctx, stream, rule);
}

}  // namespace dilatron
#endif
