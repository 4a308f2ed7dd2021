// The element-wise kernels of the GPU ring (attention/ring_dilated_attention_cuda.h): packing a
// rank's dilated keys and values into a contiguous block, adding a packed dk/dv partial back into
// the chunk's strided rows, and the fp32 sums and conversions around them.
//
// Packing uses the ring's block tasks (attention/block_attention_cuda.h): for every task and row
// j < nk, chunk row q_offset + j * q_stride maps to packed row k_offset + j * k_stride (D elements
// each), the same addresses the attention launches read.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/block_attention_cuda.h"

namespace dilatron {

// Launchers return the launch status (a .cu file cannot include core/check.h); the caller checks
// it with DILATRON_CUDA_CHECK. `tasks` is a device array of num_tasks entries with nk = rows.

// packed_k, packed_v (packed rows) := k, v (chunk rows). T is float or bf16.
template <typename T>
cudaError_t launch_pack_rows(T* packed_k, T* packed_v, const T* k, const T* v, const DeviceBlockTask* tasks,
                             int64_t num_tasks, int rows, int D, cudaStream_t stream);

// dk, dv (chunk rows) += packed_dk, packed_dv (packed rows), in fp32.
cudaError_t launch_unpack_add_rows(float* dk, float* dv, const float* packed_dk, const float* packed_dv,
                                   const DeviceBlockTask* tasks, int64_t num_tasks, int rows, int D,
                                   cudaStream_t stream);

// acc[i] += x[i] for i < count.
cudaError_t launch_add(float* acc, const float* x, int64_t count, cudaStream_t stream);

// out[i] := T(scale * in[i]) for i < count; out may alias in when T is float.
template <typename T>
cudaError_t launch_scale_from_float(T* out, const float* in, float scale, int64_t count, cudaStream_t stream);

}  // namespace dilatron
#endif
