// One pass over memory: each element reads p, g, m, v and writes p, m, v (28 bytes), so the
// kernels are bandwidth-bound; float4 accesses keep the loads 16 bytes wide.
#include "optim/cuda_kernels.h"

namespace dilatron {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;

__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v,
                                              const detail::AdamWScalars& c) {
  m = c.beta1 * m + c.one_minus_beta1 * g;
  v = c.beta2 * v + c.one_minus_beta2 * (g * g);
  const float m_hat = m / c.bias_correction1;
  const float v_hat = v / c.bias_correction2;
  p = p - c.lr * (m_hat / (sqrtf(v_hat) + c.eps) + c.weight_decay * p);
}

// Element i of the four arrays, in place.
__device__ __forceinline__ void adamw_at(float* __restrict__ param, const float* __restrict__ grad,
                                         float* __restrict__ m, float* __restrict__ v, int64_t i,
                                         const detail::AdamWScalars& c) {
  float p = param[i], mi = m[i], vi = v[i];
  adamw_element(p, grad[i], mi, vi, c);
  param[i] = p;
  m[i] = mi;
  v[i] = vi;
}

// Float4 group i of the four arrays, in place: 16-byte loads and stores.
__device__ __forceinline__ void adamw_vec4_at(float4* __restrict__ param, const float4* __restrict__ grad,
                                              float4* __restrict__ m, float4* __restrict__ v, int64_t i,
                                              const detail::AdamWScalars& c) {
  float4 p = param[i], g = grad[i], mi = m[i], vi = v[i];
  adamw_element(p.x, g.x, mi.x, vi.x, c);
  adamw_element(p.y, g.y, mi.y, vi.y, c);
  adamw_element(p.z, g.z, mi.z, vi.z, c);
  adamw_element(p.w, g.w, mi.w, vi.w, c);
  param[i] = p;
  m[i] = mi;
  v[i] = vi;
}

// n4 float4 groups, all four arrays 16-byte aligned.
__global__ void adamw_vec4_kernel(float4* __restrict__ param, const float4* __restrict__ grad,
                                  float4* __restrict__ m, float4* __restrict__ v, int64_t n4,
                                  detail::AdamWScalars c) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    adamw_vec4_at(param, grad, m, v, i, c);
  }
}

__global__ void adamw_scalar_kernel(float* __restrict__ param, const float* __restrict__ grad,
                                    float* __restrict__ m, float* __restrict__ v, int64_t n,
                                    detail::AdamWScalars c) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    adamw_at(param, grad, m, v, i, c);
  }
}

// Block b updates chunks[b]. With `vectorise` (all four arrays 16-byte aligned) the elements of
// the chunk between its first and last multiple of 4 go as float4, the ragged head and tail
// (fewer than 4 each) as scalars; without it every element is scalar.
__global__ void adamw_segments_kernel(float* __restrict__ param, const float* __restrict__ grad,
                                      float* __restrict__ m, float* __restrict__ v,
                                      const AdamWChunk* __restrict__ chunks, bool vectorise,
                                      detail::AdamWScalars c) {
  const AdamWChunk chunk = chunks[blockIdx.x];
  if (!chunk.weight_decay) c.weight_decay = 0.0f;
  const int64_t begin = chunk.begin, end = begin + chunk.length;
  int64_t vec_begin = end, vec_end = end;
  if (vectorise) {
    vec_begin = min(end, (begin + 3) / 4 * 4);
    vec_end = max(vec_begin, end / 4 * 4);
  }
  for (int64_t i = begin + threadIdx.x; i < vec_begin; i += blockDim.x) adamw_at(param, grad, m, v, i, c);
  for (int64_t i = vec_begin / 4 + threadIdx.x; i < vec_end / 4; i += blockDim.x) {
    adamw_vec4_at(reinterpret_cast<float4*>(param), reinterpret_cast<const float4*>(grad),
                  reinterpret_cast<float4*>(m), reinterpret_cast<float4*>(v), i, c);
  }
  for (int64_t i = vec_end + threadIdx.x; i < end; i += blockDim.x) adamw_at(param, grad, m, v, i, c);
}

int blocks_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

namespace detail {

cudaError_t launch_adamw(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWScalars& c,
                         cudaStream_t stream) {
  int64_t done = 0;
  if (aligned16(param) && aligned16(grad) && aligned16(m) && aligned16(v)) {
    const int64_t n4 = n / 4;
    if (n4 > 0) {
      adamw_vec4_kernel<<<blocks_for(n4), kThreads, 0, stream>>>(
          reinterpret_cast<float4*>(param), reinterpret_cast<const float4*>(grad),
          reinterpret_cast<float4*>(m), reinterpret_cast<float4*>(v), n4, c);
      if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    }
    done = n4 * 4;
  }
  if (done < n) {
    const int64_t rest = n - done;
    adamw_scalar_kernel<<<blocks_for(rest), kThreads, 0, stream>>>(param + done, grad + done, m + done,
                                                                    v + done, rest, c);
  }
  return cudaGetLastError();
}

cudaError_t launch_adamw_segments(float* param, const float* grad, float* m, float* v, const AdamWChunk* chunks,
                                  int64_t num_chunks, const AdamWScalars& c, cudaStream_t stream) {
  if (num_chunks == 0) return cudaSuccess;
  const bool vectorise = aligned16(param) && aligned16(grad) && aligned16(m) && aligned16(v);
  adamw_segments_kernel<<<static_cast<unsigned>(num_chunks), kThreads, 0, stream>>>(param, grad, m, v, chunks,
                                                                                      vectorise, c);
  return cudaGetLastError();
}

}  // namespace detail
}  // namespace dilatron
