// Host side of the CUDA layers: argument checks and error reporting, which .cu files cannot do.
#ifdef DILATRON_CUDA
#include "model/layers_cuda.h"

#include <algorithm>

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

namespace {

// At most this many segments (2 N / segment_rows bounds them), so that their fp32 partials stay
// small at any N: 6 MiB at C = 768.
constexpr int64_t kMaxTokenSegments = 2048;
// At least this many positions per segment: enough rows for one block to be worth its launch.
constexpr int64_t kMinSegmentRows = 32;

int32_t segment_rows(int64_t N) {
  const int64_t spread = (2 * N + kMaxTokenSegments - 1) / kMaxTokenSegments;
  return static_cast<int32_t>(std::max(kMinSegmentRows, spread));
}

// A bucket of s > segment_rows positions has ceil(s / segment_rows) < 2 s / segment_rows
// segments, so all of them together fewer than 2 N / segment_rows <= kMaxTokenSegments.
int64_t max_token_segments(int64_t N) { return std::min(2 * N / segment_rows(N) + 1, kMaxTokenSegments); }

}  // namespace

int64_t token_bucket_layout_size(int64_t N) { return 3 * N + 2 + max_token_segments(N); }

TokenBuckets token_buckets(const int32_t* tokens, int64_t N, int V, std::vector<int32_t>& layout) {
  // Below 2^30, so that a segment's end (start + segment_rows) stays an int32 in the kernels.
  DILATRON_CHECK(N >= 0 && N < (int64_t{1} << 30) && V > 0, "bad shape N = {}, V = {}", N, V);
  std::vector<int32_t> count(static_cast<size_t>(V) + 1, 0);
  for (int64_t i = 0; i < N; ++i) {
    DILATRON_CHECK(tokens[i] >= 0 && tokens[i] < V, "token {} at position {} is outside [0, {})", tokens[i], i, V);
    ++count[static_cast<size_t>(tokens[i]) + 1];
  }
  TokenBuckets counts{.segment_rows = segment_rows(N)};
  // A bucket of `size` positions has none when it fits one segment.
  auto segments_of = [&](int32_t size) {
    return size > counts.segment_rows ? (size + counts.segment_rows - 1) / counts.segment_rows : 0;
  };
  for (int v = 0; v < V; ++v) {
    const int32_t size = count[static_cast<size_t>(v) + 1];
    counts.buckets += size > 0;
    counts.segments += segments_of(size);
  }
  for (int v = 0; v < V; ++v) count[static_cast<size_t>(v) + 1] += count[static_cast<size_t>(v)];  // starts
  layout.assign(static_cast<size_t>(TokenBucketLayout<int32_t>::size(counts, N)), 0);
  const TokenBucketLayout<int32_t> parts(layout.data(), counts, N);
  int32_t b = 0, segment = 0;
  for (int v = 0; v < V; ++v) {
    const int32_t begin = count[static_cast<size_t>(v)], size = count[static_cast<size_t>(v) + 1] - begin;
    if (size == 0) continue;
    parts.token[b] = v;
    parts.begin[b] = begin;
    parts.first_segment[b] = segment;
    for (int32_t k = 0; k < segments_of(size); ++k) parts.segment_bucket[segment++] = b;
    ++b;
  }
  parts.begin[counts.buckets] = static_cast<int32_t>(N);
  parts.first_segment[counts.buckets] = segment;
  for (int64_t i = 0; i < N; ++i)
    parts.positions[count[static_cast<size_t>(tokens[i])]++] = static_cast<int32_t>(i);
  return counts;
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
