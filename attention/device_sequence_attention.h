// The attention seam of the GPU model (model/gpt_cuda.h): the CUDA counterpart of
// attention/sequence_attention.h, on device pointers and a stream. The implementation here is
// make_dilated_attention_cuda (attention/dilated_attention_cuda.cc; dense attention is the spec
// dense_as_dilated); a ring implementation can sit behind the same interface.
#pragma once
#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "attention/dilated_spec.h"
#include "core/bf16.h"

namespace dilatron {

// T is float or dilatron::bf16 (core/bf16.h; same bits as __nv_bfloat16, reinterpret_cast inside .cu).
template <typename T>
class DeviceSequenceAttention {
 public:
  virtual ~DeviceSequenceAttention() = default;
  // q, k, v, out (B, Tc, H, D) contiguous T; lse (B, H, Tc) fp32; device pointers; all work queued
  // on `stream` (no host synchronisation, no allocation).
  virtual void forward(T* out, float* lse, const T* q, const T* k, const T* v, int B, int Tc, int H, int D,
                       cudaStream_t stream) = 0;
  // WRITES (does not accumulate) dq, dk, dv (B, Tc, H, D); out and lse from the forward.
  virtual void backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const float* lse, const T* q,
                        const T* k, const T* v, int B, int Tc, int H, int D, cudaStream_t stream) = 0;
};

// Dilated attention over a sequence one rank holds whole (Tc == n). Allocates its workspace once, here,
// for up to max_B x n x H x D (through core/device_allocator.h: device_allocator() / DeviceArray).
// Throws InputError (validate_dilated_spec) for a spec that does not fit, and for D > 128.
// ds_scratch_bytes caps the bf16 backward's dS scratch (launch_block_attention_backward): bigger
// launches run in chunks of tasks, and one whose single task does not fit recomputes dS in the dQ
// kernel instead. 256 MiB holds a whole GPT-2 1k micro-batch (B 16, H 12) in two chunks.
inline constexpr int64_t kDefaultDsScratchBytes = int64_t{256} << 20;
template <typename T>
std::unique_ptr<DeviceSequenceAttention<T>> make_dilated_attention_cuda(const DilatedSpec& spec, int max_B,
                                                                         int64_t n, int H, int D,
                                                                         int64_t ds_scratch_bytes =
                                                                             kDefaultDsScratchBytes);

}  // namespace dilatron
#endif
