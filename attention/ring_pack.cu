// Kernels of attention/ring_pack.h. All are memory-bound and grid-stride over a flat index; a
// packed element (task, row, column) is index (task * rows + row) * D + column.
#include <cuda_bf16.h>

#include "attention/ring_pack.h"
#include "core/bf16.h"
#include "core/device_type.h"

namespace dilatron {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < (1 << 16) ? blocks : (1 << 16));
}

__device__ __forceinline__ int64_t stride_of_grid() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }
__device__ __forceinline__ int64_t first_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }

// Where packed element `i` comes from (chunk) and goes to (packed block).
struct RowElement {
  int64_t chunk, packed;
};
__device__ __forceinline__ RowElement row_element(const DeviceBlockTask* tasks, int64_t i, int rows, int D) {
  const int64_t row = i / D, column = i % D;
  const DeviceBlockTask& task = tasks[row / rows];
  const int64_t j = row % rows;
  return {task.q_offset + j * task.q_stride + column, task.k_offset + j * task.k_stride + column};
}

// E is a storage type: a copy moves bits (float, or uint16_t for bf16).
template <typename E>
__global__ void pack_rows_kernel(E* packed_k, E* packed_v, const E* k, const E* v, const DeviceBlockTask* tasks,
                                 int64_t count, int rows, int D) {
  for (int64_t i = first_index(); i < count; i += stride_of_grid()) {
    const RowElement e = row_element(tasks, i, rows, D);
    packed_k[e.packed] = k[e.chunk];
    packed_v[e.packed] = v[e.chunk];
  }
}

__global__ void unpack_add_rows_kernel(float* dk, float* dv, const float* packed_dk, const float* packed_dv,
                                       const DeviceBlockTask* tasks, int64_t count, int rows, int D) {
  for (int64_t i = first_index(); i < count; i += stride_of_grid()) {
    const RowElement e = row_element(tasks, i, rows, D);
    dk[e.chunk] += packed_dk[e.packed];
    dv[e.chunk] += packed_dv[e.packed];
  }
}

__global__ void add_kernel(float* acc, const float* x, int64_t count) {
  for (int64_t i = first_index(); i < count; i += stride_of_grid()) acc[i] += x[i];
}

__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

template <typename O>
__global__ void scale_from_float_kernel(O* out, const float* in, float scale, int64_t count) {
  for (int64_t i = first_index(); i < count; i += stride_of_grid()) store(out + i, scale * in[i]);
}

template <typename T>
struct Storage {
  using type = float;
};
template <>
struct Storage<bf16> {
  using type = uint16_t;
};

}  // namespace

template <typename T>
cudaError_t launch_pack_rows(T* packed_k, T* packed_v, const T* k, const T* v, const DeviceBlockTask* tasks,
                             int64_t num_tasks, int rows, int D, cudaStream_t stream) {
  const int64_t count = num_tasks * rows * D;
  if (count == 0) return cudaSuccess;
  using E = typename Storage<T>::type;
  pack_rows_kernel<<<blocks_for(count), kThreads, 0, stream>>>(
      reinterpret_cast<E*>(packed_k), reinterpret_cast<E*>(packed_v), reinterpret_cast<const E*>(k),
      reinterpret_cast<const E*>(v), tasks, count, rows, D);
  return cudaGetLastError();
}

cudaError_t launch_unpack_add_rows(float* dk, float* dv, const float* packed_dk, const float* packed_dv,
                                   const DeviceBlockTask* tasks, int64_t num_tasks, int rows, int D,
                                   cudaStream_t stream) {
  const int64_t count = num_tasks * rows * D;
  if (count == 0) return cudaSuccess;
  unpack_add_rows_kernel<<<blocks_for(count), kThreads, 0, stream>>>(dk, dv, packed_dk, packed_dv, tasks, count, rows,
                                                                     D);
  return cudaGetLastError();
}

cudaError_t launch_add(float* acc, const float* x, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  add_kernel<<<blocks_for(count), kThreads, 0, stream>>>(acc, x, count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_scale_from_float(T* out, const float* in, float scale, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  scale_from_float_kernel<<<blocks_for(count), kThreads, 0, stream>>>(device_ptr(out), in, scale, count);
  return cudaGetLastError();
}

template cudaError_t launch_pack_rows<float>(float*, float*, const float*, const float*, const DeviceBlockTask*,
                                             int64_t, int, int, cudaStream_t);
template cudaError_t launch_pack_rows<bf16>(bf16*, bf16*, const bf16*, const bf16*, const DeviceBlockTask*, int64_t,
                                            int, int, cudaStream_t);
template cudaError_t launch_scale_from_float<float>(float*, const float*, float, int64_t, cudaStream_t);
template cudaError_t launch_scale_from_float<bf16>(bf16*, const float*, float, int64_t, cudaStream_t);

}  // namespace dilatron
