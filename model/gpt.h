// GPT decoder on the CPU (fp32 and fp64) with explicit forward and backward.
//
// Pre-norm blocks: x += attn(norm1(x)); x += mlp(norm2(x)); then a final norm and
// logits = x . wte^T (the LM head is tied to the token embedding). Positions are rotary
// (applied to q and k) or a learned absolute embedding. Attention is causal dense
// attention over q, k, v (B, T, H, D).
//
// Parameters live in one flat buffer described by gpt_param_specs; gradients use the same
// layout. Activations live in one arena sized in the constructor for max_batch x seq_len
// tokens; forward and backward never allocate (beyond attention's per-thread tile, which
// only grows).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <memory>

#include "attention/sequence_attention.h"
#include "core/tensor.h"
#include "model/parameter_source.h"

namespace dilatron {

enum class PositionKind { rotary, learned };
enum class NormKind { layernorm, rmsnorm };

struct GptShape {
  int n_layers, d_model, n_heads, vocab_size, seq_len;
  int d_ff;  // MLP hidden width, 0 means 4 * d_model
  PositionKind position = PositionKind::rotary;
  NormKind norm = NormKind::layernorm;
  double rope_theta = 10000;
  double init_std = 0.02;
  // Keep only each block's input in forward and recompute the block in backward.
  bool recompute = false;
};

// Throws InputError unless the shape is usable (positive sizes, heads divide d_model, even
// head dim for rotary).
void validate_gpt_shape(const GptShape& shape);
int gpt_ff_width(const GptShape& shape);

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset, numel;
  int group;          // 0 embeddings, 1..L block i-1, L+1 final norm
  bool weight_decay;  // true only for 2-D matmul weights
};

// One flat buffer, in order: wte, wpe (learned only); per block: ln1.weight, ln1.bias
// (layernorm only), attn.qkv.weight (3C, C) with rows [q; k; v], attn.qkv.bias,
// attn.proj.weight, attn.proj.bias, ln2.*, mlp.fc.weight (F, C), mlp.fc.bias,
// mlp.proj.weight (C, F), mlp.proj.bias; then ln_f.weight, ln_f.bias (layernorm only).
std::vector<ParamSpec> gpt_param_specs(const GptShape& shape);
int64_t gpt_num_params(const GptShape& shape);

// Where the model finds each parameter inside an acquired group: offsets from the group's first
// parameter, -1 where the shape has no such tensor (wpe with rotary, norm biases with RMSNorm).
// wte, wpe are in group 0, lnf_* in group L+1, blocks[l] in group l+1. The CPU and GPU models
// both read their weights through it.
struct GptBlockOffsets {
  int64_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b;
  int64_t ln2_w, ln2_b, fc_w, fc_b, fcproj_w, fcproj_b;
};
struct GptGroupOffsets {
  int64_t wte, wpe, lnf_w, lnf_b;
  std::vector<GptBlockOffsets> blocks;
  std::vector<int64_t> group_begin;  // flat offset of each group's first parameter
  std::vector<int64_t> group_numel;  // elements of each group
};
GptGroupOffsets gpt_group_offsets(const GptShape& shape);

// Bytes of the activation arena that Gpt<T>(shape, max_batch) allocates, without allocating
// it (for memory estimates of models larger than this machine). Kept equal to
// Gpt::activation_bytes() by a test; change both when the arena changes.
int64_t gpt_activation_bytes(const GptShape& shape, int max_batch, size_t element_bytes);

// Each value is a function of (seed, parameter name, element index) only, so it does not
// depend on the shape of other parameters or on sharding: matmul weights and embeddings
// N(0, init_std), output projections (attn.proj, mlp.proj) N(0, init_std / sqrt(2 L)),
// biases 0, norm weights 1.
template <typename T>
void gpt_init_params(const GptShape& shape, uint64_t seed, T* flat);
// Elements [begin, end) of one tensor (0 <= begin <= end <= spec.numel) into dst (end - begin),
// equal to the same elements of gpt_init_params: a ZeRO shard initialises only what it owns.
template <typename T>
void gpt_init_param_range(const ParamSpec& spec, const GptShape& shape, uint64_t seed, int64_t begin,
                          int64_t end, T* dst);

template <typename T>
class Gpt {
 public:
  // `attention` computes attention over the tokens this rank holds (dense, dilated, or a
  // ring over a sequence-parallel group); it must outlive the model. nullptr: dense causal.
  // `params`: where parameters and gradients live (e.g. a ZeRO-3 engine); it must outlive the
  // model. nullptr: the model owns them in flat buffers (params(), grads()).
  //
  // The model acquires a group just before it uses it and releases it right after; at the start
  // of each pass it announces that pass's acquisitions in order with will_acquire:
  //   forward:  0 (embeddings), 1..L, L+1 (final norm), 0 (tied LM head)
  //   backward: 0 (LM head; params and gradients held until the embedding backward at the end),
  //             L+1, L..1 (params and gradients; gradients_done(g) as soon as g is complete)
  Gpt(const GptShape& shape, int max_batch, SequenceAttention<T>* attention = nullptr,
      ParameterSource<T>* params = nullptr);
  Gpt(const Gpt&) = delete;  // holds pointers into its own arena
  Gpt& operator=(const Gpt&) = delete;
  ~Gpt();

  const GptShape& shape() const { return shape_; }
  const std::vector<ParamSpec>& param_specs() const { return specs_; }
  int64_t num_params() const { return n_params_; }
  // The flat buffers of the resident case; throw an Error with an external ParameterSource.
  T* params();
  T* grads();
  void zero_grads();

  // tokens (B, Tc) int32, targets (B, Tc) or nullptr; Tc <= seq_len, B <= max_batch.
  // pos0 = absolute position of the first token (0 unless sequence-parallel).
  // Returns the sum of token losses over non-ignored targets (0 without targets).
  double forward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0 = 0);
  // grads() += gradient of (dloss_weight x sum of token losses). Needs a forward with
  // targets since the last backward; reuses the logits buffer for dlogits.
  void backward(double dloss_weight);

  // (B, Tc, V) from the last forward; invalid after backward.
  const T* logits() const;
  size_t activation_bytes() const { return arena_.nbytes(); }

 private:
  // One block's parameters (or gradients) inside a flat buffer; null where absent.
  struct BlockWeights {
    T *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    T *ln2_w, *ln2_b, *fc_w, *fc_b, *fcproj_w, *fcproj_b;
  };
  using BlockOffsets = GptBlockOffsets;
  using Lse = attention_lse_t<T>;
  static_assert(std::is_same_v<Lse, T>, "the activation arena holds attention lse as T");

  // Everything one block's backward reads; all (N, ...) with N = B * Tc.
  struct BlockActivations {
    T *ln1, *ln1_mean, *ln1_rstd;  // (N, C), (N), (N)
    T *q, *k, *v, *att;            // (B, Tc, H, D) each, q and k after rotary
    Lse* lse;                      // (B, H, Tc)
    T* x_mid;                      // (N, C) residual after attention
    T *ln2, *ln2_mean, *ln2_rstd;  // (N, C), (N), (N)
    T *fc, *fc_gelu;               // (N, F) each
  };

  void norm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b) const;
  void norm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                     const T* mean, const T* rstd) const;
  // `group` is the block's acquired group buffer (group layer + 1).
  BlockWeights block_weights(const T* group, int layer) const;
  // x_out may be null when only the saved activations are wanted (recompute).
  void block_forward(int layer, const T* weights, const BlockActivations& a, const T* x_in, T* x_out);
  // residual_grad: d loss / d x_out on entry, d loss / d x_in on return.
  void block_backward(int layer, const T* weights, T* grads, const BlockActivations& a, const T* x_in);
  void require_resident(const char* what) const;

  GptShape shape_;
  int max_batch_;
  std::unique_ptr<SequenceAttention<T>> owned_attention_;
  SequenceAttention<T>* attention_;
  std::vector<ParamSpec> specs_;
  int64_t n_params_;
  Tensor params_, grads_, arena_;  // params_, grads_ empty with an external source
  std::unique_ptr<ParameterSource<T>> owned_source_;
  ParameterSource<T>* source_;
  GptGroupOffsets offsets_;

  // Carved from arena_.
  std::vector<T*> residual_;  // L + 1 of (N, C): block inputs, then the final norm input
  std::vector<BlockActivations> blocks_;  // L, or 1 shared when recomputing
  T *lnf_, *lnf_mean_, *lnf_rstd_, *logits_, *ce_lse_, *losses_;
  T *d_residual_, *d_norm_, *dq_, *dk_, *dv_, *d_fc_, *d_gelu_;  // backward scratch

  std::vector<int32_t> tokens_, targets_;  // copies of the last forward's inputs
  int B_ = 0, Tc_ = 0, pos0_ = 0;
  bool logits_valid_ = false, backward_ready_ = false;
};

}  // namespace dilatron
