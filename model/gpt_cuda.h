// The GPT decoder on the GPU: the same model as model/gpt.h (same parameters, same layout, same
// forward and backward), with every layer replaced by its CUDA twin.
//
// Precision (T = bf16 in training; T = float for tests against the CPU): parameters, their
// gradients and the optimizer state are fp32 (the ParameterSource's buffers, device memory);
// on acquiring a group the model rounds it to T into a compute copy, and every activation is T.
// From a source that versions its parameters (DeviceParameters: one GPU, or replicated data
// parallelism) it keeps a copy of every group and rounds a group again only after the parameters
// changed, once per optimizer step; from any other (ZeRO-3) it rounds each group it acquires.
// Matmuls, norms and softmaxes accumulate in fp32; parameter gradients accumulate in fp32;
// losses are fp32 per token and summed in double on the host.
//
// The LM head never holds the (N, V) logits of a long sequence: it runs in chunks of rows, and in
// training each chunk's cross-entropy backward and head backward run right after its forward
// (forward_backward), so the logits cost one chunk of memory whatever N is.
//
// Memory: one activation arena (device, allocated once here), sized like the CPU model's, plus
// the compute copies (of every group, 2 bytes per parameter, from a versioned source; else of
// two groups) and the chunked logits. The step itself never allocates.
// Everything is queued on one stream; forward and forward_backward synchronise it once, to
// return the loss. Training queues its passes (queue_forward_backward) and takes their losses
// once per optimizer step, so the GPU does not idle while the host queues the next pass.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "attention/device_sequence_attention.h"
#include "core/bf16.h"
#include "core/device_allocator.h"
#include "core/tensor.h"
#include "model/gpt.h"
#include "model/matmul_cuda.h"
#include "model/parameter_source.h"
#include "model/token_buckets.h"

namespace dilatron {

// Throws InputError when the GPU model cannot take this shape (sizes the bf16 matmul epilogue
// cannot align, head dims the attention kernel does not support).
void validate_gpt_shape_for_cuda(const GptShape& shape);

template <typename T>
class GptCuda {
 public:
  // `params` hands out DEVICE pointers to fp32 groups (acquire/release protocol of model/gpt.h:
  // forward 0, 1..L, L+1, 0; the training pass then L+1 (gradients), L..1; group 0's parameters
  // and gradients stay held from the head to the embedding backward). `attention` computes
  // attention over this rank's tokens (nullptr: dense causal over seq_len); both must outlive
  // the model. logits_chunk_rows: rows of the LM head per chunk (0: as many as fit in 1 GiB).
  // Whoever updates the parameters of a source with a parameters_version() queues the writes on
  // `stream` (or finishes them) before the model's next acquire, as the training states do.
  GptCuda(const GptShape& shape, int max_batch, ParameterSource<float>& params,
          DeviceSequenceAttention<T>* attention, cudaStream_t stream, int64_t logits_chunk_rows = 0);
  ~GptCuda();
  GptCuda(const GptCuda&) = delete;
  GptCuda& operator=(const GptCuda&) = delete;

  const GptShape& shape() const { return shape_; }
  cudaStream_t stream() const { return stream_; }

  // tokens, targets: host (B, Tc) int32 (targets may be null: no loss). Returns the summed token
  // loss over targets >= 0. Keeps the logits only when they fit one chunk (see logits()).
  double forward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0 = 0);
  // forward, then gradients += d(dloss_weight x summed loss) / d params through the source.
  // queue_forward_backward then take_queued_loss, with no other pass queued.
  double forward_backward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0,
                          double dloss_weight);
  // forward_backward without waiting for the GPU: queues the pass and the copy of its token losses
  // to pinned host memory. The host gets at most one pass ahead: queuing a pass waits for the
  // previous pass's input copies, the first work of that pass.
  void queue_forward_backward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0,
                              double dloss_weight);
  // The summed token losses of the passes queued since the last call, each summed as
  // forward_backward sums its own and added up in queue order (so bit-identical to adding up
  // forward_backward's results). Waits for the last pass.
  double take_queued_loss();

  // Host copy (B, Tc, V) of the last forward's logits; throws unless they were one chunk.
  std::vector<float> logits() const;
  // Device bytes this model holds (activations, compute copies, logits chunk, attention excluded).
  int64_t activation_bytes() const { return arena_bytes_; }

 private:
  using BlockOffsets = GptBlockOffsets;
  template <typename P>
  struct BlockWeights {
    P *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    P *ln2_w, *ln2_b, *fc_w, *fc_b, *fcproj_w, *fcproj_b;
  };
  struct BlockActivations {
    T* ln1;
    float *ln1_mean, *ln1_rstd;
    T *q, *k, *v, *att;
    float* lse;  // (B, H, Tc)
    T *x_mid, *ln2;
    float *ln2_mean, *ln2_rstd;
    T *fc, *fc_gelu;
  };

  // The compute copy (T) of group g's fp32 parameters `group`: made now, or kept from the last
  // acquire when the source's parameters_version() has not moved since.
  const T* compute_copy(const float* group, int g);
  template <typename P>
  BlockWeights<P> block_weights(P* group, int layer) const;
  void norm_forward(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b);
  void norm_backward(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w, const float* mean,
                     const float* rstd);
  void block_forward(int layer, const T* weights, const BlockActivations& a, const T* x_in, T* x_out);
  void block_backward(int layer, const T* weights, float* grads, const BlockActivations& a, const T* x_in);
  // Everything up to the final norm's output lnf_; B_, Tc_, pos0_ set.
  void trunk_forward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0);
  // The LM head and the token losses losses_ in chunks; with dwte, also dlogits and the head
  // backward into d_norm_ (d lnf) and the wte gradient.
  void head(const T* wte, float* dwte, double dloss_weight);
  // The summed token loss of the pass just queued, waiting for the stream.
  double sum_losses();
  // A queued pass's token losses on their way to the host: the copy into a slot, and the slot's
  // summed loss added to queued_loss_ once the copy is done.
  struct LossSlot {
    float* host = nullptr;  // (N) in queued_losses_
    cudaEvent_t copied = nullptr;
    int64_t rows = 0;  // 0: nothing to add
  };
  void queue_losses();
  void fold(LossSlot& slot);
  void zero(void* p, int64_t bytes);

  GptShape shape_;
  int max_batch_;
  ParameterSource<float>& source_;
  std::unique_ptr<DeviceSequenceAttention<T>> owned_attention_;
  DeviceSequenceAttention<T>* attention_;
  cudaStream_t stream_;
  MatmulContext matmul_;
  std::vector<ParamSpec> specs_;
  GptGroupOffsets offsets_;
  int64_t chunk_rows_;

  Tensor arena_;  // device bytes
  int64_t arena_bytes_ = 0;
  // Compute copies per group (none for T = float). keep_copies_: each group has its own, made
  // from the source's version copy_versions_[g]; else group 0 (embeddings/head) has one and the
  // others share one, made at every acquire.
  bool keep_copies_ = false;
  std::vector<T*> copies_;
  std::vector<std::optional<uint64_t>> copy_versions_;
  std::vector<T*> residual_;
  std::vector<BlockActivations> blocks_;
  T* lnf_;
  float *lnf_mean_, *lnf_rstd_;
  T* logits_;  // (chunk_rows, V)
  float *ce_lse_, *losses_;  // (N)
  T *d_residual_, *d_norm_, *dq_, *dk_, *dv_, *d_fc_;
  int64_t qkv_stride_ = 0;  // elements from q to k to v, and from dq_ to dk_ to dv_
  int32_t *tokens_, *targets_;  // device (N)
  int32_t* buckets_;            // device token buckets (layers_cuda.h, token_buckets)
  TokenBuckets bucket_counts_;
  std::vector<int32_t> bucket_layout_;
  PinnedHostBuffer host_io_;    // tokens, targets and buckets on their way in, losses on their way out
  cudaEvent_t inputs_copied_ = nullptr;  // after the last pass's copies out of host_io_
  // Queued passes' losses: two slots used in turn (a slot's pass is two back when it is reused).
  PinnedHostBuffer queued_losses_;
  LossSlot loss_slots_[2];
  int next_slot_ = 0;
  double queued_loss_ = 0;
  int queued_passes_ = 0;

  int B_ = 0, Tc_ = 0, pos0_ = 0;
  bool has_targets_ = false, logits_whole_ = false;
};

extern template class GptCuda<float>;
extern template class GptCuda<bf16>;

}  // namespace dilatron
#endif
