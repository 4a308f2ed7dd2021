#include "model/gpt.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>
#include <unordered_map>

#include "core/check.h"
#include "core/rng.h"
#include "model/cross_entropy.h"
#include "model/embedding.h"
#include "model/gelu.h"
#include "model/layernorm.h"
#include "model/matmul.h"
#include "model/residual.h"
#include "model/rmsnorm.h"
#include "model/rotary.h"

namespace dilatron {
namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_output_projection(const std::string& name) {
  return ends_with(name, "attn.proj.weight") || ends_with(name, "mlp.proj.weight");
}

bool is_norm_weight(const std::string& name) {
  return ends_with(name, "ln1.weight") || ends_with(name, "ln2.weight") || name == "ln_f.weight";
}

// Hands out consecutive 64-byte-aligned pieces of an arena. With a null base it only
// counts, so one carving function both sizes and fills the arena.
template <typename T>
class ArenaCarver {
 public:
  explicit ArenaCarver(T* base) : base_(base) {}
  T* take(int64_t n) {
    T* piece = base_ ? base_ + used_ : nullptr;
    constexpr int64_t kAlign = 64 / sizeof(T);
    used_ += (n + kAlign - 1) / kAlign * kAlign;
    return piece;
  }
  int64_t used() const { return used_; }

 private:
  T* base_;
  int64_t used_ = 0;
};

// Parameters and gradients in the model's own flat buffers: a group's buffer is its slice.
// Tracks what is held so a model that breaks the acquire/release protocol fails here too.
template <typename T>
class ResidentParameterSource final : public ParameterSource<T> {
 public:
  ResidentParameterSource(T* params, T* grads, std::vector<int64_t> group_begin)
      : params_(params),
        grads_(grads),
        group_begin_(std::move(group_begin)),
        params_held_(group_begin_.size()),
        grads_held_(group_begin_.size()) {}

  const T* acquire(int group) override {
    params_held_.mark(group, true, "acquire");
    return params_ + group_begin_[group];
  }
  void release(int group) override { params_held_.mark(group, false, "release"); }
  T* acquire_gradients(int group) override {
    grads_held_.mark(group, true, "acquire_gradients");
    return grads_ + group_begin_[group];
  }
  void gradients_done(int group) override { grads_held_.mark(group, false, "gradients_done"); }

 private:
  T* params_;
  T* grads_;
  std::vector<int64_t> group_begin_;
  HeldGroups params_held_, grads_held_;
};

}  // namespace

void validate_gpt_shape(const GptShape& s) {
  DILATRON_CHECK_INPUT(s.n_layers > 0 && s.d_model > 0 && s.n_heads > 0 && s.vocab_size > 0 &&
                           s.seq_len > 0 && s.d_ff >= 0,
                       "model sizes must be positive (n_layers {}, d_model {}, n_heads {}, "
                       "vocab_size {}, seq_len {}, d_ff {})",
                       s.n_layers, s.d_model, s.n_heads, s.vocab_size, s.seq_len, s.d_ff);
  DILATRON_CHECK_INPUT(s.d_model % s.n_heads == 0, "d_model {} is not divisible by n_heads {}",
                       s.d_model, s.n_heads);
  DILATRON_CHECK_INPUT(s.position != PositionKind::rotary || (s.d_model / s.n_heads) % 2 == 0,
                       "rotary positions need an even head dimension, got {}",
                       s.d_model / s.n_heads);
  DILATRON_CHECK_INPUT(s.init_std > 0 && s.rope_theta > 0, "init_std and rope_theta must be > 0");
}

int gpt_ff_width(const GptShape& s) { return s.d_ff > 0 ? s.d_ff : 4 * s.d_model; }

int64_t gpt_activation_bytes(const GptShape& s, int max_batch, size_t element_bytes) {
  const int64_t N = static_cast<int64_t>(max_batch) * s.seq_len;
  const int64_t C = s.d_model, F = gpt_ff_width(s), V = s.vocab_size, H = s.n_heads;
  const int64_t align = 64 / static_cast<int64_t>(element_bytes);
  auto piece = [&](int64_t n) { return (n + align - 1) / align * align; };
  const int64_t per_block = 7 * piece(N * C) + 4 * piece(N) + piece(N * H) + 2 * piece(N * F);
  const int64_t saved_blocks = s.recompute ? 1 : s.n_layers;
  const int64_t elements = (s.n_layers + 1) * piece(N * C) + saved_blocks * per_block +
                           piece(N * C) + 4 * piece(N) + piece(N * V) +  // final norm, logits, loss
                           5 * piece(N * C) + 2 * piece(N * F);           // backward scratch
  return elements * static_cast<int64_t>(element_bytes);
}

std::vector<ParamSpec> gpt_param_specs(const GptShape& s) {
  validate_gpt_shape(s);
  const int64_t C = s.d_model, F = gpt_ff_width(s);
  std::vector<ParamSpec> specs;
  int64_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, int group, bool decay) {
    const int64_t numel = shape_numel(shape);
    specs.push_back({std::move(name), std::move(shape), offset, numel, group, decay});
    offset += numel;
  };
  const bool layernorm = s.norm == NormKind::layernorm;
  auto add_norm = [&](const std::string& prefix, int group) {
    add(prefix + ".weight", {C}, group, false);
    if (layernorm) add(prefix + ".bias", {C}, group, false);
  };
  add("wte", {s.vocab_size, C}, 0, false);
  if (s.position == PositionKind::learned) add("wpe", {s.seq_len, C}, 0, false);
  for (int l = 0; l < s.n_layers; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    const int group = l + 1;
    add_norm(p + "ln1", group);
    add(p + "attn.qkv.weight", {3 * C, C}, group, true);
    add(p + "attn.qkv.bias", {3 * C}, group, false);
    add(p + "attn.proj.weight", {C, C}, group, true);
    add(p + "attn.proj.bias", {C}, group, false);
    add_norm(p + "ln2", group);
    add(p + "mlp.fc.weight", {F, C}, group, true);
    add(p + "mlp.fc.bias", {F}, group, false);
    add(p + "mlp.proj.weight", {C, F}, group, true);
    add(p + "mlp.proj.bias", {C}, group, false);
  }
  add_norm("ln_f", s.n_layers + 1);
  return specs;
}

int64_t gpt_num_params(const GptShape& s) {
  const auto specs = gpt_param_specs(s);
  return specs.back().offset + specs.back().numel;
}

template <typename T>
void gpt_init_param_range(const ParamSpec& p, const GptShape& s, uint64_t seed, int64_t begin, int64_t end,
                          T* dst) {
  DILATRON_CHECK(0 <= begin && begin <= end && end <= p.numel, "range [{}, {}) outside {} ({} elements)", begin,
                 end, p.name, p.numel);
  if (is_norm_weight(p.name)) {
    std::fill(dst, dst + (end - begin), T(1));
  } else if (ends_with(p.name, ".bias")) {
    std::fill(dst, dst + (end - begin), T(0));
  } else {
    // GPT-2: each residual branch's output projection is scaled by 1/sqrt(2 L) so the
    // residual stream's variance does not grow with depth.
    const double stddev = s.init_std / (is_output_projection(p.name) ? std::sqrt(2.0 * s.n_layers) : 1.0);
    const PhiloxKey key = philox_key(seed);
    const uint64_t stream = name_stream(p.name);
    auto fill = [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i)
        dst[i - begin] = static_cast<T>(stddev * philox_normal(key, stream, static_cast<uint64_t>(i)));
    };
    // Each element is a pure function of its index, so threads change nothing but the time
    // (minutes for billions of elements on one core).
    constexpr int64_t kPerThread = int64_t{1} << 22;
    const int64_t threads = std::min<int64_t>((end - begin) / kPerThread, std::thread::hardware_concurrency());
    if (threads < 2) {
      fill(begin, end);
    } else {
      std::vector<std::thread> pool;
      const int64_t chunk = (end - begin + threads - 1) / threads;
      for (int64_t lo = begin; lo < end; lo += chunk) pool.emplace_back(fill, lo, std::min(end, lo + chunk));
      for (std::thread& t : pool) t.join();
    }
  }
}

template <typename T>
void gpt_init_params(const GptShape& s, uint64_t seed, T* flat) {
  for (const ParamSpec& p : gpt_param_specs(s)) gpt_init_param_range(p, s, seed, 0, p.numel, flat + p.offset);
}

GptGroupOffsets gpt_group_offsets(const GptShape& shape) {
  const std::vector<ParamSpec> specs = gpt_param_specs(shape);
  GptGroupOffsets o;
  o.group_begin.assign(static_cast<size_t>(shape.n_layers) + 2, -1);
  o.group_numel.assign(o.group_begin.size(), 0);
  for (const ParamSpec& p : specs) {
    if (o.group_begin[p.group] < 0) o.group_begin[p.group] = p.offset;
    o.group_numel[p.group] += p.numel;
  }
  std::unordered_map<std::string, int64_t> offset_of;
  for (const ParamSpec& p : specs) offset_of[p.name] = p.offset - o.group_begin[p.group];
  auto find = [&](const std::string& name) {
    auto it = offset_of.find(name);
    return it == offset_of.end() ? int64_t{-1} : it->second;
  };
  o.wte = find("wte");
  o.wpe = find("wpe");
  o.lnf_w = find("ln_f.weight");
  o.lnf_b = find("ln_f.bias");
  for (int l = 0; l < shape.n_layers; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    o.blocks.push_back({find(p + "ln1.weight"), find(p + "ln1.bias"), find(p + "attn.qkv.weight"),
                        find(p + "attn.qkv.bias"), find(p + "attn.proj.weight"), find(p + "attn.proj.bias"),
                        find(p + "ln2.weight"), find(p + "ln2.bias"), find(p + "mlp.fc.weight"),
                        find(p + "mlp.fc.bias"), find(p + "mlp.proj.weight"), find(p + "mlp.proj.bias")});
  }
  return o;
}

template <typename T>
Gpt<T>::Gpt(const GptShape& shape, int max_batch, SequenceAttention<T>* attention, ParameterSource<T>* params)
    : shape_(shape),
      max_batch_(max_batch),
      owned_attention_(attention ? nullptr : std::make_unique<DenseSequenceAttention<T>>(true)),
      attention_(attention ? attention : owned_attention_.get()),
      specs_(gpt_param_specs(shape)),
      n_params_(specs_.back().offset + specs_.back().numel),
      source_(params),
      offsets_(gpt_group_offsets(shape)) {
  DILATRON_CHECK_INPUT(max_batch > 0, "max_batch must be positive, got {}", max_batch);
  if (source_ == nullptr) {
    params_ = Tensor::zeros({n_params_}, dtype_of<T>());
    grads_ = Tensor::zeros({n_params_}, dtype_of<T>());
    owned_source_ =
        std::make_unique<ResidentParameterSource<T>>(params_.data<T>(), grads_.data<T>(), offsets_.group_begin);
    source_ = owned_source_.get();
  }

  const int64_t N = static_cast<int64_t>(max_batch) * shape.seq_len;
  const int64_t C = shape.d_model, F = gpt_ff_width(shape), V = shape.vocab_size;
  const int n_saved_blocks = shape.recompute ? 1 : shape.n_layers;
  auto carve = [&](ArenaCarver<T>& a) {
    residual_.clear();
    for (int l = 0; l <= shape.n_layers; ++l) residual_.push_back(a.take(N * C));
    blocks_.clear();
    for (int l = 0; l < n_saved_blocks; ++l) {
      BlockActivations b;
      b.ln1 = a.take(N * C);
      b.ln1_mean = a.take(N);
      b.ln1_rstd = a.take(N);
      b.q = a.take(N * C);
      b.k = a.take(N * C);
      b.v = a.take(N * C);
      b.att = a.take(N * C);
      b.lse = a.take(N * shape.n_heads);
      b.x_mid = a.take(N * C);
      b.ln2 = a.take(N * C);
      b.ln2_mean = a.take(N);
      b.ln2_rstd = a.take(N);
      b.fc = a.take(N * F);
      b.fc_gelu = a.take(N * F);
      blocks_.push_back(b);
    }
    lnf_ = a.take(N * C);
    lnf_mean_ = a.take(N);
    lnf_rstd_ = a.take(N);
    logits_ = a.take(N * V);
    ce_lse_ = a.take(N);
    losses_ = a.take(N);
    d_residual_ = a.take(N * C);
    d_norm_ = a.take(N * C);
    dq_ = a.take(N * C);
    dk_ = a.take(N * C);
    dv_ = a.take(N * C);
    d_fc_ = a.take(N * F);
    d_gelu_ = a.take(N * F);
  };
  ArenaCarver<T> count(nullptr);
  carve(count);
  arena_ = Tensor::empty({count.used()}, dtype_of<T>());
  ArenaCarver<T> fill(arena_.data<T>());
  carve(fill);
  tokens_.resize(static_cast<size_t>(N));
  targets_.resize(static_cast<size_t>(N));
}

template <typename T>
Gpt<T>::~Gpt() = default;

template <typename T>
void Gpt<T>::require_resident(const char* what) const {
  DILATRON_CHECK(owned_source_ != nullptr,
                 "Gpt::{} needs the model's own parameters, but this model reads them from an external "
                 "ParameterSource (e.g. ZeRO-3): use the source's API instead",
                 what);
}

template <typename T>
T* Gpt<T>::params() {
  require_resident("params()");
  return params_.data<T>();
}

template <typename T>
T* Gpt<T>::grads() {
  require_resident("grads()");
  return grads_.data<T>();
}

template <typename T>
void Gpt<T>::zero_grads() {
  require_resident("zero_grads()");
  std::fill(grads(), grads() + num_params(), T(0));
}

template <typename T>
typename Gpt<T>::BlockWeights Gpt<T>::block_weights(const T* group, int layer) const {
  const BlockOffsets& o = offsets_.blocks[layer];
  // BlockWeights serves parameters (read only) and gradients alike.
  T* flat = const_cast<T*>(group);
  auto at = [flat](int64_t offset) { return offset < 0 ? nullptr : flat + offset; };
  return {at(o.ln1_w), at(o.ln1_b), at(o.qkv_w),  at(o.qkv_b), at(o.proj_w),   at(o.proj_b),
          at(o.ln2_w), at(o.ln2_b), at(o.fc_w),   at(o.fc_b),  at(o.fcproj_w), at(o.fcproj_b)};
}

template <typename T>
void Gpt<T>::norm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b) const {
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  if (shape_.norm == NormKind::layernorm)
    layernorm_forward(out, mean, rstd, inp, w, b, N, shape_.d_model);
  else
    rmsnorm_forward(out, rstd, inp, w, N, shape_.d_model);
}

template <typename T>
void Gpt<T>::norm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                           const T* mean, const T* rstd) const {
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  if (shape_.norm == NormKind::layernorm)
    layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, shape_.d_model);
  else
    rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, shape_.d_model);
}

template <typename T>
void Gpt<T>::block_forward(int layer, const T* weights, const BlockActivations& a, const T* x_in, T* x_out) {
  const BlockWeights w = block_weights(weights, layer);
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  const int C = shape_.d_model, F = gpt_ff_width(shape_), H = shape_.n_heads, D = C / H;
  norm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x_in, w.ln1_w, w.ln1_b);
  // The (3C, C) qkv weight's row blocks produce q, k, v directly in (B, Tc, H, D) layout.
  const int64_t CC = static_cast<int64_t>(C) * C;
  matmul_forward(a.q, a.ln1, w.qkv_w, w.qkv_b, N, C, C);
  matmul_forward(a.k, a.ln1, w.qkv_w + CC, w.qkv_b + C, N, C, C);
  matmul_forward(a.v, a.ln1, w.qkv_w + 2 * CC, w.qkv_b + 2 * C, N, C, C);
  if (shape_.position == PositionKind::rotary) {
    rotary_forward(a.q, B_, Tc_, H, D, pos0_, shape_.rope_theta);
    rotary_forward(a.k, B_, Tc_, H, D, pos0_, shape_.rope_theta);
  }
  attention_->forward(a.att, a.lse, a.q, a.k, a.v, B_, Tc_, H, D);
  matmul_forward(a.x_mid, a.att, w.proj_w, w.proj_b, N, C, C);
  residual_forward(a.x_mid, x_in, N * C);
  norm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.x_mid, w.ln2_w, w.ln2_b);
  matmul_forward(a.fc, a.ln2, w.fc_w, w.fc_b, N, C, F);
  gelu_forward(a.fc_gelu, a.fc, N * F);
  if (x_out != nullptr) {
    matmul_forward(x_out, a.fc_gelu, w.fcproj_w, w.fcproj_b, N, F, C);
    residual_forward(x_out, a.x_mid, N * C);
  }
}

template <typename T>
void Gpt<T>::block_backward(int layer, const T* weights, T* grads, const BlockActivations& a, const T* x_in) {
  const BlockWeights w = block_weights(weights, layer);
  const BlockWeights g = block_weights(grads, layer);
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  const int C = shape_.d_model, F = gpt_ff_width(shape_), H = shape_.n_heads, D = C / H;
  const int64_t NC = N * C, NF = N * F, CC = static_cast<int64_t>(C) * C;
  auto zero = [](T* p, int64_t n) { std::fill(p, p + n, T(0)); };

  // MLP branch: d_residual_ holds d x_out and also feeds d x_mid through the skip.
  zero(d_gelu_, NF);
  matmul_backward(d_gelu_, g.fcproj_w, g.fcproj_b, d_residual_, a.fc_gelu, w.fcproj_w, N, F, C);
  zero(d_fc_, NF);
  gelu_backward(d_fc_, a.fc, d_gelu_, NF);
  zero(d_norm_, NC);
  matmul_backward(d_norm_, g.fc_w, g.fc_b, d_fc_, a.ln2, w.fc_w, N, C, F);
  norm_backward(d_residual_, g.ln2_w, g.ln2_b, d_norm_, a.x_mid, w.ln2_w, a.ln2_mean, a.ln2_rstd);

  // Attention branch: d_residual_ now holds d x_mid.
  zero(d_norm_, NC);
  matmul_backward(d_norm_, g.proj_w, g.proj_b, d_residual_, a.att, w.proj_w, N, C, C);
  zero(dq_, NC);
  zero(dk_, NC);
  zero(dv_, NC);
  attention_->backward(dq_, dk_, dv_, d_norm_, a.att, a.lse, a.q, a.k, a.v, B_, Tc_, H, D);
  if (shape_.position == PositionKind::rotary) {
    rotary_backward(dq_, B_, Tc_, H, D, pos0_, shape_.rope_theta);
    rotary_backward(dk_, B_, Tc_, H, D, pos0_, shape_.rope_theta);
  }
  zero(d_norm_, NC);
  matmul_backward(d_norm_, g.qkv_w, g.qkv_b, dq_, a.ln1, w.qkv_w, N, C, C);
  matmul_backward(d_norm_, g.qkv_w + CC, g.qkv_b + C, dk_, a.ln1, w.qkv_w + CC, N, C, C);
  matmul_backward(d_norm_, g.qkv_w + 2 * CC, g.qkv_b + 2 * C, dv_, a.ln1, w.qkv_w + 2 * CC, N, C,
                  C);
  norm_backward(d_residual_, g.ln1_w, g.ln1_b, d_norm_, x_in, w.ln1_w, a.ln1_mean, a.ln1_rstd);
}

template <typename T>
double Gpt<T>::forward(const int32_t* tokens, const int32_t* targets, int B, int Tc, int pos0) {
  DILATRON_CHECK(B > 0 && B <= max_batch_, "batch {} outside [1, {}]", B, max_batch_);
  DILATRON_CHECK(Tc > 0 && Tc <= shape_.seq_len, "sequence length {} outside [1, {}]", Tc,
                 shape_.seq_len);
  DILATRON_CHECK(pos0 >= 0, "negative start position {}", pos0);
  DILATRON_CHECK(shape_.position != PositionKind::learned || pos0 + Tc <= shape_.seq_len,
                 "positions {}..{} exceed the learned position table ({})", pos0, pos0 + Tc - 1,
                 shape_.seq_len);
  B_ = B;
  Tc_ = Tc;
  pos0_ = pos0;
  const int64_t N = static_cast<int64_t>(B) * Tc;
  const int C = shape_.d_model, V = shape_.vocab_size, L = shape_.n_layers;
  std::copy_n(tokens, N, tokens_.data());
  if (targets != nullptr) std::copy_n(targets, N, targets_.data());

  ParameterSource<T>& src = *source_;
  src.will_acquire(0);
  for (int g = 1; g <= L + 1; ++g) src.will_acquire(g);
  src.will_acquire(0);

  const T* embeddings = src.acquire(0);
  token_embedding_forward(residual_[0], tokens_.data(), embeddings + offsets_.wte, N, C, V);
  if (shape_.position == PositionKind::learned)
    position_embedding_forward(residual_[0], embeddings + offsets_.wpe, B, Tc, C, pos0);
  src.release(0);
  for (int l = 0; l < L; ++l) {
    const T* weights = src.acquire(l + 1);
    block_forward(l, weights, blocks_[shape_.recompute ? 0 : l], residual_[l], residual_[l + 1]);
    src.release(l + 1);
  }
  const T* final_norm = src.acquire(L + 1);
  norm_forward(lnf_, lnf_mean_, lnf_rstd_, residual_[L], final_norm + offsets_.lnf_w,
               offsets_.lnf_b < 0 ? nullptr : final_norm + offsets_.lnf_b);
  src.release(L + 1);
  const T* head = src.acquire(0);
  matmul_forward<T>(logits_, lnf_, head + offsets_.wte, nullptr, N, C, V);
  src.release(0);
  logits_valid_ = true;
  backward_ready_ = targets != nullptr;
  if (targets == nullptr) return 0.0;

  cross_entropy_forward(losses_, ce_lse_, logits_, targets_.data(), N, V);
  double total = 0;
  for (int64_t n = 0; n < N; ++n) total += losses_[n];
  return total;
}

template <typename T>
void Gpt<T>::backward(double dloss_weight) {
  DILATRON_CHECK(backward_ready_, "backward needs a forward with targets since the last backward");
  backward_ready_ = false;
  logits_valid_ = false;
  const int64_t N = static_cast<int64_t>(B_) * Tc_;
  const int C = shape_.d_model, V = shape_.vocab_size, L = shape_.n_layers;
  T* dlogits = logits_;  // (N, V), written over the logits
  cross_entropy_backward(dlogits, logits_, ce_lse_, targets_.data(), static_cast<T>(dloss_weight),
                         N, V);
  ParameterSource<T>& src = *source_;
  src.will_acquire(0);
  for (int g = L + 1; g >= 1; --g) src.will_acquire(g);

  // Group 0 serves the LM head now and the embedding at the end: held across the whole pass.
  const T* embeddings = src.acquire(0);
  T* d_embeddings = src.acquire_gradients(0);
  std::fill(d_norm_, d_norm_ + N * C, T(0));
  matmul_backward<T>(d_norm_, d_embeddings + offsets_.wte, nullptr, dlogits, lnf_, embeddings + offsets_.wte, N, C, V);
  {
    const T* final_norm = src.acquire(L + 1);
    T* d_final_norm = src.acquire_gradients(L + 1);
    std::fill(d_residual_, d_residual_ + N * C, T(0));
    norm_backward(d_residual_, d_final_norm + offsets_.lnf_w, offsets_.lnf_b < 0 ? nullptr : d_final_norm + offsets_.lnf_b, d_norm_,
                  residual_[L], final_norm + offsets_.lnf_w, lnf_mean_, lnf_rstd_);
    src.gradients_done(L + 1);
    src.release(L + 1);
  }
  for (int l = L - 1; l >= 0; --l) {
    const BlockActivations& a = blocks_[shape_.recompute ? 0 : l];
    const T* weights = src.acquire(l + 1);
    T* d_weights = src.acquire_gradients(l + 1);
    if (shape_.recompute) block_forward(l, weights, a, residual_[l], nullptr);
    block_backward(l, weights, d_weights, a, residual_[l]);
    src.gradients_done(l + 1);
    src.release(l + 1);
  }
  token_embedding_backward(d_embeddings + offsets_.wte, d_residual_, tokens_.data(), N, C);
  if (shape_.position == PositionKind::learned)
    position_embedding_backward(d_embeddings + offsets_.wpe, d_residual_, B_, Tc_, C, pos0_);
  src.gradients_done(0);
  src.release(0);
}

template <typename T>
const T* Gpt<T>::logits() const {
  DILATRON_CHECK(logits_valid_, "logits are only valid between forward and backward");
  return logits_;
}

template void gpt_init_params<float>(const GptShape&, uint64_t, float*);
template void gpt_init_params<double>(const GptShape&, uint64_t, double*);
template void gpt_init_param_range<float>(const ParamSpec&, const GptShape&, uint64_t, int64_t, int64_t, float*);
template void gpt_init_param_range<double>(const ParamSpec&, const GptShape&, uint64_t, int64_t, int64_t,
                                           double*);
template class Gpt<float>;
template class Gpt<double>;

}  // namespace dilatron
