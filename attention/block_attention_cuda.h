// The block primitive of attention/block_attention.h on the GPU, batched: one launch runs many
// (query block, key block) tasks at once, e.g. every (batch, head, segment) of one dilated branch,
// or every (batch, head) of one ring step. Rows are addressed as in RowBlock (base offset + row
// stride, in elements), so dilated rows are read in place.
//
// Forward (flash-attention style): a CTA takes 64 query rows of one task, loops over 64-key tiles
// held in shared memory with an online softmax, and accumulates in fp32; it then WRITES (out, lse)
// or MERGES into them by log-sum-exp (merge_attention_partial), so branches or ring steps
// accumulate one launch each. Backward: the dK/dV kernel (a CTA per key tile, looping over query
// tiles) and the dQ kernel (a CTA per query tile, looping over key tiles) recompute the
// probabilities from the FINAL lse and use the FINAL delta = rowsum(dout * out), exactly as
// block_attention_backward; they write or add (+=) their result. No atomics: the result is
// deterministic. The forward never stores an (nq, nk) matrix; the backward may keep dS for a
// bounded chunk of tasks (launch_block_attention_backward).
//
// bf16 inputs at D = 64 and 128 run the products on tensor cores (mma.sync m16n8k16, fp32
// accumulation; probabilities and dS rounded to bf16 before their products, as FlashAttention
// does); every other case runs fp32 arithmetic on the CUDA cores. Softmax statistics, lse and
// accumulators are fp32 everywhere. D <= 128.
// A row that sees no key gets out = 0, lse = -inf and probability 0 in the backward; never NaN.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/block_attention.h"
#include "core/bf16.h"

namespace dilatron {

// One (query block, key block) pair. Offsets and strides are in elements of the tensor a role
// addresses: q_* of q, out, dout and dq; k_* of k, v, dk and dv; lse_* of lse and delta.
// mask causal needs nq == nk (query i sees keys j <= i, blocks aligned).
struct DeviceBlockTask {
  int64_t q_offset, q_stride;
  int64_t k_offset, k_stride;
  int64_t lse_offset, lse_stride;
  int32_t nq, nk;
};

// The largest head dimension the kernels take.
inline constexpr int kMaxBlockAttentionHeadDim = 128;

}  // namespace dilatron

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

namespace dilatron {

// A batch of tasks for one launch: `tasks` is a DEVICE array of num_tasks entries whose output
// rows (q rows for the forward and dq, k rows for dk/dv) are pairwise disjoint. max_nq / max_nk
// bound the tasks' nq / nk (they size the grid). scale multiplies the scores (1/sqrt(D)).
struct BlockAttentionBatch {
  const DeviceBlockTask* tasks;
  int64_t num_tasks;
  int max_nq, max_nk;
  int D;
  float scale;
  BlockMask mask;
};

// The launchers return the launch status (a .cu file cannot include core/check.h); the caller
// checks it with DILATRON_CUDA_CHECK. cudaErrorInvalidValue: D outside [1, 128], or more than
// 65535 * 64 rows in a task. T is float or bf16; O (outputs) is T or float (an fp32 accumulator).

// merge = false: out := out_scale * attention, lse := its log-sum-exp.
// merge = true: (out, lse) := the LSE merge of (out, lse) and this launch (out_scale must be 1).
template <typename T, typename O>
cudaError_t launch_block_attention_forward(O* out, float* lse, const T* q, const T* k, const T* v,
                                           const BlockAttentionBatch& batch, float out_scale, bool merge,
                                           cudaStream_t stream);

// dk, dv (k rows) and dq (q rows) := (accumulate: +=) this launch's share of the gradient, for
// upstream gradient dout_scale * dout; lse and delta are the FINAL per-row values.
template <typename T, typename O>
cudaError_t launch_block_attention_backward_dkdv(O* dk, O* dv, const T* dout, const float* delta, const float* lse,
                                                 const T* q, const T* k, const T* v,
                                                 const BlockAttentionBatch& batch, float dout_scale,
                                                 bool accumulate, cudaStream_t stream);
template <typename T, typename O>
cudaError_t launch_block_attention_backward_dq(O* dq, const T* dout, const float* delta, const float* lse,
                                               const T* q, const T* k, const T* v, const BlockAttentionBatch& batch,
                                               float dout_scale, bool accumulate, cudaStream_t stream);

// Both gradients, as the two launchers above, but for bf16 inputs on the tensor cores (D = 64 or
// 128) the dK/dV kernel also leaves dS (bf16, the values its dK product used) in ds_scratch and
// dQ is one product per tile from it instead of recomputing the scores and dP (seven products
// per tile pair become five). Tasks run in chunks whose dS fits ds_scratch_elements; where not
// even one task fits (or ds_scratch is null, or T is float) it runs the two launchers above.
// Deterministic either way. block_attention_ds_scratch_elements: the bf16 elements a scratch
// needs to hold the largest of `batches` whole, at most cap_bytes (0 where none keeps dS).
int64_t block_attention_ds_scratch_elements(const std::vector<BlockAttentionBatch>& batches, int64_t cap_bytes);
template <typename T, typename O>
cudaError_t launch_block_attention_backward(O* dq, O* dk, O* dv, const T* dout, const float* delta, const float* lse,
                                            const T* q, const T* k, const T* v, const BlockAttentionBatch& batch,
                                            float dout_scale, bool accumulate, bf16* ds_scratch,
                                            int64_t ds_scratch_elements, cudaStream_t stream);

// delta (B, H, n) := rowsum(dout * out) of (B, n, H, D) tensors, in fp32.
template <typename T>
cudaError_t launch_attention_row_delta(float* delta, const T* dout, const T* out, int B, int64_t n, int H, int D,
                                       cudaStream_t stream);

// x[0, count) := value (e.g. -inf into an lse before merges).
cudaError_t launch_fill(float* x, float value, int64_t count, cudaStream_t stream);

// out[i] := T(in[i]) for i < count: an fp32 accumulator to the output type.
template <typename T>
cudaError_t launch_convert_from_float(T* out, const float* in, int64_t count, cudaStream_t stream);

}  // namespace dilatron
#endif
