// Host side of the CUDA layers: argument checks and error reporting, which .cu files cannot do.
#ifdef DILATRON_CUDA
#include "model/layers_cuda.h"

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device_allocator.h"
#include "model/layernorm.h"
#include "model/layers_cuda_kernels.h"

namespace dilatron {
namespace {

void check_rows(int64_t N, int C) {
  DILATRON_CHECK(N >= 0 && C > 0, "bad shape N = {}, C = {}", N, C);
}

// Scratch for the norms' parameter-gradient partials (norms.cu), from the process's caching
// allocator rather than a buffer of this file's own, and without changing the layer API:
// - no cudaMalloc in the step loop: from the second call on, the block is a cached one;
// - stream-safe: the handle is dropped while the kernels are still queued, but the allocator
//   hands a block freed on a stream out again only for that stream, whose later work runs after
//   them; a static per-device buffer would be shared by every stream of the device instead;
// - counted with the rest of the device memory (allocator stats).
DeviceArray<float> norm_grad_scratch(int64_t N, int C, cudaStream_t stream) {
  return DeviceArray<float>(detail::norm_param_grad_scratch_floats(N, C), stream);
}

}  // namespace

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias, int64_t N,
                       int C, cudaStream_t stream) {
  check_rows(N, C);
  if (N == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_layernorm_forward(out, mean, rstd, inp, weight, bias, N, C,
                                                       static_cast<float>(kNormEps), stream));
}

template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t N, int C, cudaStream_t stream) {
  check_rows(N, C);
  if (N == 0) return;
  DeviceArray<float> scratch = norm_grad_scratch(N, C, stream);
  DILATRON_CUDA_CHECK(detail::launch_layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C,
                                                        scratch.data(), stream));
}

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, int64_t N, int C, cudaStream_t stream) {
  check_rows(N, C);
  if (N == 0) return;
  DILATRON_CUDA_CHECK(
      detail::launch_rmsnorm_forward(out, rstd, inp, weight, N, C, static_cast<float>(kNormEps), stream));
}

template <typename T>
void rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight, const float* rstd,
                      int64_t N, int C, cudaStream_t stream) {
  check_rows(N, C);
  if (N == 0) return;
  DeviceArray<float> scratch = norm_grad_scratch(N, C, stream);
  DILATRON_CUDA_CHECK(
      detail::launch_rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C, scratch.data(), stream));
}

template <typename T>
void convert_from_float(T* out, const float* inp, int64_t n, cudaStream_t stream) {
  DILATRON_CHECK(n >= 0, "negative size {}", n);
  if (n == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_convert_from_float(out, inp, n, stream));
}

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n, cudaStream_t stream) {
  DILATRON_CHECK(n >= 0, "negative size {}", n);
  if (n == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_gelu_forward(out, inp, n, stream));
}

template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n, cudaStream_t stream) {
  DILATRON_CHECK(n >= 0, "negative size {}", n);
  if (n == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_gelu_backward(dinp, inp, dout, n, stream));
}

template <typename T>
void residual_forward(T* x, const T* branch, int64_t n, cudaStream_t stream) {
  DILATRON_CHECK(n >= 0, "negative size {}", n);
  if (n == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_residual_forward(x, branch, n, stream));
}

template <typename T>
void token_embedding_forward(T* out, const int32_t* tokens, const T* wte, int64_t N, int C, int V,
                             cudaStream_t stream) {
  check_rows(N, C);
  DILATRON_CHECK(V > 0, "empty vocabulary");
  if (N == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_token_embedding_forward(out, tokens, wte, N, C, V, stream));
}

template <typename T>
void token_embedding_backward(float* dwte, const T* dout, const int32_t* layout, const TokenBuckets& buckets,
                              int64_t N, int C, cudaStream_t stream) {
  check_rows(N, C);
  if (buckets.buckets == 0) return;
  // From the caching allocator, as the norms' scratch (norm_grad_scratch); sized for the most
  // segments N rows can have, so that every micro-batch of this shape reuses one cached block.
  DILATRON_CHECK(buckets.segments <= max_token_segments(N), "{} token segments for N = {}, at most {}",
                 buckets.segments, N, max_token_segments(N));
  DeviceArray<float> partials(max_token_segments(N) * C, stream);
  DILATRON_CUDA_CHECK(
      detail::launch_token_embedding_backward(dwte, dout, layout, buckets, N, C, partials.data(), stream));
}

template <typename T>
void position_embedding_forward(T* x, const T* wpe, int B, int Tc, int C, int pos0, cudaStream_t stream) {
  DILATRON_CHECK(B >= 0 && Tc >= 0 && C > 0 && pos0 >= 0, "bad shape B = {}, Tc = {}, C = {}, pos0 = {}", B, Tc,
                 C, pos0);
  if (B == 0 || Tc == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_position_embedding_forward(x, wpe, B, Tc, C, pos0, stream));
}

template <typename T>
void position_embedding_backward(float* dwpe, const T* dx, int B, int Tc, int C, int pos0, cudaStream_t stream) {
  DILATRON_CHECK(B >= 0 && Tc >= 0 && C > 0 && pos0 >= 0, "bad shape B = {}, Tc = {}, C = {}, pos0 = {}", B, Tc,
                 C, pos0);
  if (B == 0 || Tc == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_position_embedding_backward(dwpe, dx, B, Tc, C, pos0, stream));
}

namespace {

template <typename T>
void rotate(T* x, int B, int Tc, int H, int D, int pos0, double theta, int direction, cudaStream_t stream) {
  DILATRON_CHECK(D > 0 && D % 2 == 0, "rotary embedding needs an even head dimension, got {}", D);
  DILATRON_CHECK(B >= 0 && Tc >= 0 && H >= 0 && pos0 >= 0, "bad shape B = {}, Tc = {}, H = {}, pos0 = {}", B, Tc,
                 H, pos0);
  if (B == 0 || Tc == 0 || H == 0) return;
  DILATRON_CUDA_CHECK(detail::launch_rotary(x, B, Tc, H, D, pos0, theta, direction, stream));
}

}  // namespace

template <typename T>
void rotary_forward(T* x, int B, int Tc, int H, int D, int pos0, double theta, cudaStream_t stream) {
  rotate(x, B, Tc, H, D, pos0, theta, +1, stream);
}

template <typename T>
void rotary_backward(T* dx, int B, int Tc, int H, int D, int pos0, double theta, cudaStream_t stream) {
  rotate(dx, B, Tc, H, D, pos0, theta, -1, stream);
}

#define DILATRON_INSTANTIATE(T)                                                                                  \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int,             \
                                     cudaStream_t);                                                              \
  template void layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*, const float*,            \
                                      const float*, int64_t, int, cudaStream_t);                                 \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, int64_t, int, cudaStream_t);                  \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int64_t, int,         \
                                    cudaStream_t);                                                               \
  template void convert_from_float<T>(T*, const float*, int64_t, cudaStream_t);                                  \
  template void gelu_forward<T>(T*, const T*, int64_t, cudaStream_t);                                            \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t, cudaStream_t);                                 \
  template void residual_forward<T>(T*, const T*, int64_t, cudaStream_t);                                        \
  template void token_embedding_forward<T>(T*, const int32_t*, const T*, int64_t, int, int, cudaStream_t);       \
  template void token_embedding_backward<T>(float*, const T*, const int32_t*, const TokenBuckets&, int64_t, int, \
                                            cudaStream_t);                                                       \
  template void position_embedding_forward<T>(T*, const T*, int, int, int, int, cudaStream_t);                   \
  template void position_embedding_backward<T>(float*, const T*, int, int, int, int, cudaStream_t);              \
  template void rotary_forward<T>(T*, int, int, int, int, int, double, cudaStream_t);                            \
  template void rotary_backward<T>(T*, int, int, int, int, int, double, cudaStream_t);
DILATRON_INSTANTIATE(float)
DILATRON_INSTANTIATE(__nv_bfloat16)
#undef DILATRON_INSTANTIATE

}  // namespace dilatron
#endif
