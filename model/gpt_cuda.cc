#include "model/gpt_cuda.h"

#ifdef DILATRON_CUDA
#include <cuda_bf16.h>

#include <algorithm>
#include <type_traits>
#include <utility>

#include "attention/dilated_spec.h"
#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device_type.h"
#include "core/op_profiler.h"
#include "model/cross_entropy_cuda.h"
#include "model/layers_cuda.h"

namespace dilatron {
namespace {

// Hands out consecutive 256-byte-aligned pieces of a byte arena; with a null base it only counts,
// so one carving function both sizes and fills the arena (as the CPU model's ArenaCarver).
class ByteCarver {
 public:
  explicit ByteCarver(std::byte* base) : base_(base) {}
  template <typename P>
  P* take(int64_t n) {
    P* piece = base_ ? reinterpret_cast<P*>(base_ + used_) : nullptr;
    used_ += (n * static_cast<int64_t>(sizeof(P)) + 255) / 256 * 256;
    return piece;
  }
  int64_t used() const { return used_; }

 private:
  std::byte* base_;
  int64_t used_ = 0;
};

constexpr int64_t kLogitsChunkBytes = int64_t{1} << 30;

// A pass's summed token loss: in double, in token order, so it is the same number however the
// host gets the losses (forward's synchronous read, or a queued pass's slot).
double sum_in_order(const float* losses, int64_t n) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += losses[i];
  return total;
}

void collect_profile() {
  if (OpProfiler& profiler = OpProfiler::instance(); profiler.enabled()) profiler.collect();
}

}  // namespace

void validate_gpt_shape_for_cuda(const GptShape& s) {
  validate_gpt_shape(s);
  // Every tensor of a group then starts 16-byte aligned in the bf16 compute copy, which the
  // cuBLASLt bias epilogue needs.
  DILATRON_CHECK_INPUT(s.d_model % 8 == 0 && gpt_ff_width(s) % 8 == 0,
                       "model.d_model ({}) and model.d_ff ({}) must be multiples of 8 on the GPU", s.d_model,
                       gpt_ff_width(s));
  DILATRON_CHECK_INPUT(s.d_model / s.n_heads <= 128, "model: head dimension d_model / n_heads = {} is above 128, "
                       "the most the GPU attention kernel takes", s.d_model / s.n_heads);
}

template <typename T>
GptCuda<T>::GptCuda(const GptShape& shape, int max_batch, ParameterSource<float>& params,
                    DeviceSequenceAttention<T>* attention, cudaStream_t stream, int64_t logits_chunk_rows)
    : shape_(shape),
      max_batch_(max_batch),
      source_(params),
      attention_(attention),
      stream_(stream),
      specs_(gpt_param_specs(shape)),
      offsets_(gpt_group_offsets(shape)) {
  validate_gpt_shape_for_cuda(shape);
  DILATRON_CHECK_INPUT(max_batch > 0, "max_batch must be positive, got {}", max_batch);
  const int L = shape.n_layers, C = shape.d_model, F = gpt_ff_width(shape), V = shape.vocab_size;
  if (attention_ == nullptr) {
    owned_attention_ =
        make_dilated_attention_cuda<T>(dense_as_dilated(shape.seq_len, true), max_batch, shape.seq_len,
                                       shape.n_heads, C / shape.n_heads);
    attention_ = owned_attention_.get();
  }


  const int64_t N = static_cast<int64_t>(max_batch) * shape.seq_len;
  const int64_t H = shape.n_heads;
  chunk_rows_ = logits_chunk_rows > 0 ? logits_chunk_rows
                                      : std::max<int64_t>(1, kLogitsChunkBytes / (V * static_cast<int64_t>(sizeof(T))));
  chunk_rows_ = std::min(chunk_rows_, N);
  const int64_t largest_block_group =
      *std::max_element(offsets_.group_numel.begin() + 1, offsets_.group_numel.end());
  const bool copies = std::is_same_v<T, bf16>;  // fp32 compute reads the master weights directly
  keep_copies_ = copies && source_.parameters_version().has_value();
  const int n_groups = static_cast<int>(offsets_.group_numel.size());
  copy_versions_.assign(n_groups, std::nullopt);
  const int n_saved_blocks = shape.recompute ? 1 : L;
  // q, k, v (and dq, dk, dv) lie qkv_stride_ apart in one buffer, for the batched q/k/v GEMMs.
  qkv_stride_ = N * C;
  // A piece within a taken buffer; null while the carver only counts.
  auto at = [](T* base, int64_t offset) { return base != nullptr ? base + offset : nullptr; };
  auto carve = [&](ByteCarver& a) {
    copies_.assign(n_groups, nullptr);
    if (keep_copies_) {
      // One copy per group, kept across micro-batches: 2 bytes per parameter of GPU memory buy
      // L + 2 conversions per optimizer step instead of 2 (L + 2) per micro-batch.
      for (int g = 0; g < n_groups; ++g) copies_[g] = a.take<T>(offsets_.group_numel[g]);
    } else if (copies) {
      // Group 0 is held from the head to the embedding backward; the others take turns in one.
      copies_[0] = a.take<T>(offsets_.group_numel[0]);
      std::fill(copies_.begin() + 1, copies_.end(), a.take<T>(largest_block_group));
    }
    residual_.clear();
    for (int l = 0; l <= L; ++l) residual_.push_back(a.take<T>(N * C));
    blocks_.clear();
    for (int l = 0; l < n_saved_blocks; ++l) {
      BlockActivations b;
      b.ln1 = a.take<T>(N * C);
      b.ln1_mean = a.take<float>(N);
      b.ln1_rstd = a.take<float>(N);
      b.q = a.take<T>(3 * qkv_stride_);
      b.k = at(b.q, qkv_stride_);
      b.v = at(b.q, 2 * qkv_stride_);
      b.att = a.take<T>(N * C);
      b.lse = a.take<float>(N * H);
      b.x_mid = a.take<T>(N * C);
      b.ln2 = a.take<T>(N * C);
      b.ln2_mean = a.take<float>(N);
      b.ln2_rstd = a.take<float>(N);
      b.fc = a.take<T>(N * F);
      b.fc_gelu = a.take<T>(N * F);
      blocks_.push_back(b);
    }
    lnf_ = a.take<T>(N * C);
    lnf_mean_ = a.take<float>(N);
    lnf_rstd_ = a.take<float>(N);
    logits_ = a.take<T>(chunk_rows_ * V);
    ce_lse_ = a.take<float>(N);
    losses_ = a.take<float>(N);
    d_residual_ = a.take<T>(N * C);
    d_norm_ = a.take<T>(N * C);
    dq_ = a.take<T>(3 * qkv_stride_);
    dk_ = at(dq_, qkv_stride_);
    dv_ = at(dq_, 2 * qkv_stride_);
    d_fc_ = a.take<T>(N * F);
    tokens_ = a.take<int32_t>(N);
    targets_ = a.take<int32_t>(N);
    buckets_ = a.take<int32_t>(token_bucket_layout_size(N));
  };
  ByteCarver count(nullptr);
  carve(count);
  arena_bytes_ = count.used();
  arena_ = Tensor::empty({arena_bytes_ / 2}, DType::bf16, Device::cuda);  // bytes, as 2-byte elements
  ByteCarver fill(static_cast<std::byte*>(arena_.raw()));
  carve(fill);
  // Poison: all-ones bytes are NaN in fp32 and bf16, so anything read before this step wrote it
  // shows up in the loss and the tests.
  DILATRON_CUDA_CHECK(cudaMemset(arena_.raw(), 0xff, static_cast<size_t>(arena_bytes_)));
  // tokens, targets, losses, token buckets
  host_io_.reserve(static_cast<size_t>(3 * N + token_bucket_layout_size(N)) * sizeof(int32_t));
  queued_losses_.reserve(static_cast<size_t>(2 * N) * sizeof(float));
  for (int i = 0; i < 2; ++i) {
    loss_slots_[i].host = queued_losses_.as<float>() + i * N;
    DILATRON_CUDA_CHECK(cudaEventCreateWithFlags(&loss_slots_[i].copied, cudaEventDisableTiming));
  }
  DILATRON_CUDA_CHECK(cudaEventCreateWithFlags(&inputs_copied_, cudaEventDisableTiming));
}

template <typename T>
GptCuda<T>::~GptCuda() {
  // Queued copies may still use the pinned buffers freed after this body: wait for the events
  // after them (not for the stream, which may be gone already). A destructor cannot throw.
  for (cudaEvent_t event : {loss_slots_[0].copied, loss_slots_[1].copied, inputs_copied_}) {
    cudaEventSynchronize(event);
    cudaEventDestroy(event);
  }
}

template <typename T>
void GptCuda<T>::zero(void* p, int64_t bytes) {
  DILATRON_CUDA_CHECK(cudaMemsetAsync(p, 0, static_cast<size_t>(bytes), stream_));
}

template <typename T>
const T* GptCuda<T>::compute_copy(const float* group, int g) {
  if constexpr (std::is_same_v<T, float>) {
    (void)g;
    return group;
  } else {
    if (keep_copies_) {
      const std::optional<uint64_t> version = source_.parameters_version();
      DILATRON_CHECK(version.has_value(), "the parameter source of group {} stopped versioning its parameters", g);
      if (copy_versions_[g] == version) return copies_[g];  // no update since the last conversion
      copy_versions_[g] = version;
    }
    DILATRON_PROFILE("convert_to_bf16", stream_);
    convert_from_float(device_ptr(copies_[g]), group, offsets_.group_numel[g], stream_);
    return copies_[g];
  }
}

template <typename T>
template <typename P>
typename GptCuda<T>::template BlockWeights<P> GptCuda<T>::block_weights(P* group, int layer) const {
  const BlockOffsets& o = offsets_.blocks[layer];
  auto at = [group](int64_t offset) { return offset < 0 ? nullptr : group + offset; };
  return {at(o.ln1_w), at(o.ln1_b), at(o.qkv_w), at(o.qkv_b), at(o.proj_w),   at(o.proj_b),
          at(o.ln2_w), at(o.ln2_b), at(o.fc_w),  at(o.fc_b),  at(o.fcproj_w), at(o.fcproj_b)};
}

template <typename T>
void GptCuda<T>::norm_forward(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b) {
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  if (shape_.norm == NormKind::layernorm)
    layernorm_forward(device_ptr(out), mean, rstd, device_ptr(inp), device_ptr(w), device_ptr(b), N, shape_.d_model,
                      stream_);
  else
    rmsnorm_forward(device_ptr(out), rstd, device_ptr(inp), device_ptr(w), N, shape_.d_model, stream_);
}

template <typename T>
void GptCuda<T>::norm_backward(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w,
                               const float* mean, const float* rstd) {
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  if (shape_.norm == NormKind::layernorm)
    layernorm_backward(device_ptr(dinp), dw, db, device_ptr(dout), device_ptr(inp), device_ptr(w), mean, rstd, N,
                       shape_.d_model, stream_);
  else
    rmsnorm_backward(device_ptr(dinp), dw, device_ptr(dout), device_ptr(inp), device_ptr(w), rstd, N, shape_.d_model,
                     stream_);
}

template <typename T>
void GptCuda<T>::block_forward(int layer, const T* weights, const BlockActivations& a, const T* x_in, T* x_out) {
  const auto w = block_weights(weights, layer);
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  const int C = shape_.d_model, F = gpt_ff_width(shape_), H = shape_.n_heads, D = C / H;
  {
    DILATRON_PROFILE("fwd.norm", stream_);
    norm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x_in, w.ln1_w, w.ln1_b);
  }
  {
    DILATRON_PROFILE("fwd.matmul.qkv", stream_);
    // The (3C, C) qkv weight's row blocks produce q, k, v directly in (B, Tc, H, D) layout, in one
    // batched GEMM (k and v follow q at qkv_stride_).
    matmul_forward_batched(a.q, qkv_stride_, a.ln1, w.qkv_w, w.qkv_b, N, C, C, 3, matmul_, stream_);
  }
  if (shape_.position == PositionKind::rotary) {
    DILATRON_PROFILE("fwd.rotary", stream_);
    rotary_forward(device_ptr(a.q), B_, Tc_, H, D, pos0_, shape_.rope_theta, stream_);
    rotary_forward(device_ptr(a.k), B_, Tc_, H, D, pos0_, shape_.rope_theta, stream_);
  }
  {
    DILATRON_PROFILE("fwd.attention", stream_);
    attention_->forward(a.att, a.lse, a.q, a.k, a.v, B_, Tc_, H, D, stream_);
  }
  {
    DILATRON_PROFILE("fwd.matmul.proj+residual", stream_);
    matmul_forward_residual(a.x_mid, a.att, w.proj_w, w.proj_b, x_in, N, C, C, matmul_, stream_);
  }
  {
    DILATRON_PROFILE("fwd.norm", stream_);
    norm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.x_mid, w.ln2_w, w.ln2_b);
  }
  {
    DILATRON_PROFILE("fwd.matmul.fc+gelu", stream_);
    // One GEMM writes both fc and fc_gelu (also when recomputing, x_out null: the backward reads both).
    matmul_gelu_forward(a.fc_gelu, a.fc, a.ln2, w.fc_w, w.fc_b, N, C, F, matmul_, stream_);
  }
  if (x_out != nullptr) {
    DILATRON_PROFILE("fwd.matmul.fcproj+residual", stream_);
    matmul_forward_residual(x_out, a.fc_gelu, w.fcproj_w, w.fcproj_b, a.x_mid, N, F, C, matmul_, stream_);
  }
}

template <typename T>
void GptCuda<T>::block_backward(int layer, const T* weights, float* grads, const BlockActivations& a,
                                const T* x_in) {
  const auto w = block_weights(weights, layer);
  const auto g = block_weights(grads, layer);
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  const int C = shape_.d_model, F = gpt_ff_width(shape_), H = shape_.n_heads, D = C / H;

  // MLP branch: d_residual_ holds d x_out and also feeds d x_mid through the skip.
  {
    DILATRON_PROFILE("bwd.matmul.fcproj+dgelu", stream_);
    // d fc = (d x_out . fcproj_w) * GELU'(fc) straight from the GEMM's epilogue.
    matmul_backward_dgelu(d_fc_, g.fcproj_w, g.fcproj_b, d_residual_, a.fc_gelu, a.fc, w.fcproj_w, N, F, C,
                          matmul_, stream_);
  }
  {
    DILATRON_PROFILE("bwd.matmul.fc", stream_);
    matmul_backward(d_norm_, g.fc_w, g.fc_b, d_fc_, a.ln2, w.fc_w, N, C, F, matmul_, stream_);
  }
  {
    DILATRON_PROFILE("bwd.norm", stream_);
    norm_backward(d_residual_, g.ln2_w, g.ln2_b, d_norm_, a.x_mid, w.ln2_w, a.ln2_mean, a.ln2_rstd);
  }

  // Attention branch: d_residual_ now holds d x_mid.
  {
    DILATRON_PROFILE("bwd.matmul.proj", stream_);
    matmul_backward(d_norm_, g.proj_w, g.proj_b, d_residual_, a.att, w.proj_w, N, C, C, matmul_, stream_);
  }
  {
    DILATRON_PROFILE("bwd.attention", stream_);
    attention_->backward(dq_, dk_, dv_, d_norm_, a.att, a.lse, a.q, a.k, a.v, B_, Tc_, H, D, stream_);
  }
  if (shape_.position == PositionKind::rotary) {
    DILATRON_PROFILE("bwd.rotary", stream_);
    rotary_backward(device_ptr(dq_), B_, Tc_, H, D, pos0_, shape_.rope_theta, stream_);
    rotary_backward(device_ptr(dk_), B_, Tc_, H, D, pos0_, shape_.rope_theta, stream_);
  }
  {
    DILATRON_PROFILE("bwd.matmul.qkv", stream_);
    // d ln1 = the sum of the three products; the three weight gradients in one batched GEMM and the
    // three bias gradients in one launch (dk_ and dv_ follow dq_ at qkv_stride_).
    matmul_backward_batched(d_norm_, g.qkv_w, g.qkv_b, dq_, qkv_stride_, a.ln1, w.qkv_w, N, C, C, 3, matmul_,
                            stream_);
  }
  {
    DILATRON_PROFILE("bwd.norm", stream_);
    norm_backward(d_residual_, g.ln1_w, g.ln1_b, d_norm_, x_in, w.ln1_w, a.ln1_mean, a.ln1_rstd);
  }
}

template <typename T>
void GptCuda<T>::trunk_forward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0) {
  DILATRON_CHECK(B > 0 && B <= max_batch_, "batch {} outside [1, {}]", B, max_batch_);
  DILATRON_CHECK(Tc > 0 && Tc <= shape_.seq_len, "sequence length {} outside [1, {}]", Tc, shape_.seq_len);
  DILATRON_CHECK(pos0 >= 0, "negative start position {}", pos0);
  DILATRON_CHECK(shape_.position != PositionKind::learned || pos0 + Tc <= shape_.seq_len,
                 "positions {}..{} exceed the learned position table ({})", pos0, pos0 + Tc - 1, shape_.seq_len);
  B_ = B, Tc_ = Tc, pos0_ = pos0;
  has_targets_ = targets != nullptr;
  const int64_t N = static_cast<int64_t>(B) * Tc;
  const int C = shape_.d_model, V = shape_.vocab_size, L = shape_.n_layers;

  // The embedding backward's token buckets, built here where the tokens are (checks them too).
  bucket_counts_ = token_buckets(tokens, N, V, bucket_layout_);
  // Inputs go through pinned memory so the copies are truly asynchronous. A queued pass may not
  // have copied its inputs out of the staging buffer yet: wait for those copies, the first work of
  // that pass, not for the pass. This keeps the host at most one pass ahead of the GPU.
  DILATRON_CUDA_CHECK(cudaEventSynchronize(inputs_copied_));
  int32_t* staged = host_io_.as<int32_t>();
  std::copy_n(tokens, N, staged);
  if (has_targets_) std::copy_n(targets, N, staged + N);
  DILATRON_CUDA_CHECK(cudaMemcpyAsync(tokens_, staged, N * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  if (has_targets_)
    DILATRON_CUDA_CHECK(
        cudaMemcpyAsync(targets_, staged + N, N * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  std::copy(bucket_layout_.begin(), bucket_layout_.end(), staged + 3 * N);
  DILATRON_CUDA_CHECK(cudaMemcpyAsync(buckets_, staged + 3 * N, bucket_layout_.size() * sizeof(int32_t),
                                      cudaMemcpyHostToDevice, stream_));
  DILATRON_CUDA_CHECK(cudaEventRecord(inputs_copied_, stream_));

  const float* embeddings = source_.acquire(0);
  const T* emb = compute_copy(embeddings, 0);
  {
    DILATRON_PROFILE("embedding", stream_);
    token_embedding_forward(device_ptr(residual_[0]), tokens_, device_ptr(emb + offsets_.wte), N, C, V, stream_);
    if (shape_.position == PositionKind::learned)
      position_embedding_forward(device_ptr(residual_[0]), device_ptr(emb + offsets_.wpe), B, Tc, C, pos0, stream_);
  }
  source_.release(0);
  for (int l = 0; l < L; ++l) {
    const T* weights = compute_copy(source_.acquire(l + 1), l + 1);
    block_forward(l, weights, blocks_[shape_.recompute ? 0 : l], residual_[l], residual_[l + 1]);
    source_.release(l + 1);
  }
  const T* final_norm = compute_copy(source_.acquire(L + 1), L + 1);
  norm_forward(lnf_, lnf_mean_, lnf_rstd_, residual_[L], final_norm + offsets_.lnf_w,
               offsets_.lnf_b < 0 ? nullptr : final_norm + offsets_.lnf_b);
  source_.release(L + 1);
}

template <typename T>
void GptCuda<T>::head(const T* wte, float* dwte, double dloss_weight) {
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  const int C = shape_.d_model, V = shape_.vocab_size;
  for (int64_t r0 = 0; r0 < N; r0 += chunk_rows_) {
    const int64_t n = std::min(chunk_rows_, N - r0);
    {
      DILATRON_PROFILE("head.matmul", stream_);
      matmul_forward(logits_, lnf_ + r0 * C, wte, nullptr, n, C, V, matmul_, stream_);
    }
    if (!has_targets_) continue;
    {
      DILATRON_PROFILE("head.cross_entropy", stream_);
      // Training needs the logits only to make dlogits: one pass turns them into it in place.
      if (dwte != nullptr)
        cross_entropy_forward_backward(losses_ + r0, ce_lse_ + r0, logits_, targets_ + r0,
                                       static_cast<float>(dloss_weight), n, V, stream_);
      else
        cross_entropy_forward(losses_ + r0, ce_lse_ + r0, logits_, targets_ + r0, n, V, stream_);
    }
    if (dwte == nullptr) continue;
    DILATRON_PROFILE("head.matmul.backward", stream_);
    matmul_backward(d_norm_ + r0 * C, dwte, nullptr, logits_, lnf_ + r0 * C, wte, n, C, V, matmul_, stream_);
  }
  logits_whole_ = dwte == nullptr && N <= chunk_rows_;
}

template <typename T>
double GptCuda<T>::sum_losses() {
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  float* staged = host_io_.as<float>() + 2 * N;
  DILATRON_CUDA_CHECK(cudaMemcpyAsync(staged, losses_, N * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
  collect_profile();
  return sum_in_order(staged, N);
}

template <typename T>
void GptCuda<T>::queue_losses() {
  LossSlot& slot = loss_slots_[next_slot_];
  next_slot_ = 1 - next_slot_;
  // The slot holds the loss of the pass two back, long copied: the host never runs more than one
  // pass ahead (trunk_forward), so this does not wait.
  fold(slot);
  slot.rows = static_cast<int64_t>(B_) * Tc_;
  DILATRON_CUDA_CHECK(
      cudaMemcpyAsync(slot.host, losses_, slot.rows * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  DILATRON_CUDA_CHECK(cudaEventRecord(slot.copied, stream_));
}

template <typename T>
void GptCuda<T>::fold(LossSlot& slot) {
  if (slot.rows == 0) return;
  DILATRON_CUDA_CHECK(cudaEventSynchronize(slot.copied));
  queued_loss_ += sum_in_order(slot.host, slot.rows);
  slot.rows = 0;
}

template <typename T>
double GptCuda<T>::take_queued_loss() {
  // Oldest first: the slot written next holds the older pass.
  fold(loss_slots_[next_slot_]);
  fold(loss_slots_[1 - next_slot_]);
  // With profiling on, this waits for all queued work (collect needs its events completed).
  collect_profile();
  queued_passes_ = 0;
  return std::exchange(queued_loss_, 0.0);
}

template <typename T>
double GptCuda<T>::forward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0) {
  const int L = shape_.n_layers;
  for (int g = 0; g <= L + 1; ++g) source_.will_acquire(g);
  source_.will_acquire(0);
  trunk_forward(tokens, targets, B, Tc, pos0);
  const T* emb = compute_copy(source_.acquire(0), 0);
  head(emb + offsets_.wte, nullptr, 0.0);
  source_.release(0);
  if (has_targets_) return sum_losses();
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return 0.0;
}

template <typename T>
double GptCuda<T>::forward_backward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0,
                                    double dloss_weight) {
  DILATRON_CHECK(queued_passes_ == 0, "forward_backward with {} queued passes whose loss was not taken",
                 queued_passes_);
  queue_forward_backward(tokens, targets, B, Tc, pos0, dloss_weight);
  return take_queued_loss();
}

template <typename T>
void GptCuda<T>::queue_forward_backward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0,
                                        double dloss_weight) {
  DILATRON_CHECK(targets != nullptr, "forward_backward needs targets");
  const int L = shape_.n_layers, C = shape_.d_model;
  source_.will_acquire(0);
  for (int g = 1; g <= L + 1; ++g) source_.will_acquire(g);
  source_.will_acquire(0);
  for (int g = L + 1; g >= 1; --g) source_.will_acquire(g);
  trunk_forward(tokens, targets, B, Tc, pos0);
  const int64_t N = static_cast<int64_t>(B) * Tc;

  // Group 0 serves the LM head now and the embedding at the end: held across the whole pass.
  const T* emb = compute_copy(source_.acquire(0), 0);
  float* d_emb = source_.acquire_gradients(0);
  head(emb + offsets_.wte, d_emb + offsets_.wte, dloss_weight);  // d_norm_ := d lnf
  {
    const float* final_norm_master = source_.acquire(L + 1);
    const T* final_norm = compute_copy(final_norm_master, L + 1);
    float* d_final_norm = source_.acquire_gradients(L + 1);
    zero(d_residual_, N * C * static_cast<int64_t>(sizeof(T)));  // the norm backward adds
    norm_backward(d_residual_, d_final_norm + offsets_.lnf_w,
                  offsets_.lnf_b < 0 ? nullptr : d_final_norm + offsets_.lnf_b, d_norm_, residual_[L],
                  final_norm + offsets_.lnf_w, lnf_mean_, lnf_rstd_);
    source_.gradients_done(L + 1);
    source_.release(L + 1);
  }
  for (int l = L - 1; l >= 0; --l) {
    const BlockActivations& a = blocks_[shape_.recompute ? 0 : l];
    const T* weights = compute_copy(source_.acquire(l + 1), l + 1);
    float* d_weights = source_.acquire_gradients(l + 1);
    if (shape_.recompute) block_forward(l, weights, a, residual_[l], nullptr);
    block_backward(l, weights, d_weights, a, residual_[l]);
    source_.gradients_done(l + 1);
    source_.release(l + 1);
  }
  {
    DILATRON_PROFILE("embedding.backward", stream_);
    token_embedding_backward(d_emb + offsets_.wte, device_ptr(d_residual_), buckets_, bucket_counts_, N, C, stream_);
    if (shape_.position == PositionKind::learned)
      position_embedding_backward(d_emb + offsets_.wpe, device_ptr(d_residual_), B_, Tc_, C, pos0_, stream_);
  }
  source_.gradients_done(0);
  source_.release(0);
  queue_losses();
  ++queued_passes_;
}

template <typename T>
std::vector<float> GptCuda<T>::logits() const {
  DILATRON_CHECK(logits_whole_, "the logits of the last forward are kept only for a forward (no backward) whose "
                                "B x Tc rows fit one LM-head chunk ({} rows)", chunk_rows_);
  const int64_t n = static_cast<int64_t>(B_) * Tc_ * shape_.vocab_size;
  std::vector<T> raw(static_cast<size_t>(n));
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream_));
  DILATRON_CUDA_CHECK(cudaMemcpy(raw.data(), logits_, n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if constexpr (std::is_same_v<T, float>)
      out[i] = raw[i];
    else
      out[i] = raw[i].to_float();
  }
  return out;
}

template class GptCuda<float>;
template class GptCuda<bf16>;

}  // namespace dilatron
#endif
