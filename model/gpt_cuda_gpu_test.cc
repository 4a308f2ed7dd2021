// The whole GPU model against the CPU model (model/gpt.h) from the same parameters: loss,
// logits and every parameter's gradient, in fp32 (tight) and bf16 (bf16 tolerance), for dense
// and dilated attention, both norms, both position kinds, with and without recomputation.
// Each case prints one line per comparison, so the log reads as a table of errors.
// Needs a GPU (tags = ["gpu"]).
#include <doctest/doctest.h>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "attention/device_sequence_attention.h"
#include "attention/dilated_attention.h"
#include "core/cuda_check.h"
#include "core/rng.h"
#include "model/device_parameters.h"
#include "model/gpt.h"
#include "model/gpt_cuda.h"
#include "model/parameter_source.h"

namespace dilatron {
namespace {

struct Case {
  std::string name;
  GptShape shape;
  int B;
  std::vector<DilatedBranch> dilated;  // empty: dense causal
};

// Relative error of the whole vector: ||got - want|| / ||want||.
double relative_error(const std::vector<float>& got, const float* want, int64_t n) {
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
    ref += static_cast<double>(want[i]) * want[i];
  }
  if (!std::isfinite(diff)) return INFINITY;
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

std::vector<float> download(const float* device, int64_t n) {
  std::vector<float> host(static_cast<size_t>(n));
  DILATRON_CUDA_CHECK(cudaDeviceSynchronize());
  DILATRON_CUDA_CHECK(cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
  return host;
}

void random_tokens(std::vector<int32_t>& tokens, int V, uint64_t seed) {
  CounterRng rng(seed, 7);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(V)));
}

// tolerances: {loss, logits, gradients}, relative.
template <typename T>
void check_against_cpu(const Case& c, double loss_tol, double logits_tol, double grad_tol) {
  const GptShape& s = c.shape;
  const int T_ = s.seq_len;
  const int64_t N = static_cast<int64_t>(c.B) * T_;
  std::vector<int32_t> tokens(N), targets(N);
  random_tokens(tokens, s.vocab_size, 11 + c.B);
  random_tokens(targets, s.vocab_size, 23 + c.B);
  targets[1] = -1;  // an ignored target
  const double weight = 1.0 / static_cast<double>(N);
  const uint64_t seed = 1234;

  // CPU reference, fp32.
  DilatedSpec spec{c.dilated, DilatedMode::longnet, true};
  std::unique_ptr<SequenceAttention<float>> cpu_attention;
  if (!c.dilated.empty()) cpu_attention = std::make_unique<DilatedSequenceAttention<float>>(spec);
  Gpt<float> cpu(s, c.B, cpu_attention.get());
  gpt_init_params(s, seed, cpu.params());
  const double cpu_loss_eval = cpu.forward(tokens.data(), targets.data(), c.B, T_);
  const std::vector<float> cpu_logits(cpu.logits(), cpu.logits() + N * s.vocab_size);
  cpu.zero_grads();
  const double cpu_loss = cpu.forward(tokens.data(), targets.data(), c.B, T_);
  cpu.backward(weight);

  // GPU, same parameters.
  cudaStream_t stream;
  DILATRON_CUDA_CHECK(cudaStreamCreate(&stream));
  DeviceParameters params(s);
  DILATRON_CUDA_CHECK(cudaMemcpy(params.params_for_update(), cpu.params(), cpu.num_params() * sizeof(float),
                                 cudaMemcpyHostToDevice));
  std::unique_ptr<DeviceSequenceAttention<T>> gpu_attention;
  if (!c.dilated.empty())
    gpu_attention = make_dilated_attention_cuda<T>(spec, c.B, T_, s.n_heads, s.d_model / s.n_heads);
  GptCuda<T> gpu(s, c.B, params, gpu_attention.get(), stream, /*logits_chunk_rows=*/0);
  const double gpu_loss_eval = gpu.forward(tokens.data(), targets.data(), c.B, T_);
  const std::vector<float> gpu_logits = gpu.logits();
  // Several LM-head chunks in training, to exercise the chunking.
  GptCuda<T> chunked(s, c.B, params, gpu_attention.get(), stream, /*logits_chunk_rows=*/N / 3 + 1);
  const double gpu_loss = chunked.forward_backward(tokens.data(), targets.data(), c.B, T_, 0, weight);
  const std::vector<float> gpu_grads = download(params.grads(), params.num_params());

  const double eval_err = std::abs(gpu_loss_eval - cpu_loss_eval) / std::abs(cpu_loss_eval);
  const double loss_err = std::abs(gpu_loss - cpu_loss) / std::abs(cpu_loss);
  const double logits_err = relative_error(gpu_logits, cpu_logits.data(), N * s.vocab_size);
  std::printf("%-34s %-5s loss %.6f vs %.6f (rel %.2e, eval rel %.2e), logits rel %.2e\n", c.name.c_str(),
              std::is_same_v<T, float> ? "fp32" : "bf16", gpu_loss, cpu_loss, loss_err, eval_err, logits_err);
  CHECK(eval_err <= loss_tol);
  CHECK(loss_err <= loss_tol);
  CHECK(logits_err <= logits_tol);
  double worst = 0;
  std::string worst_name;
  for (const ParamSpec& p : gpt_param_specs(s)) {
    std::vector<float> got(gpu_grads.begin() + p.offset, gpu_grads.begin() + p.offset + p.numel);
    const double err = relative_error(got, cpu.grads() + p.offset, p.numel);
    if (!(err <= grad_tol)) std::printf("    gradient of %s: rel %.2e > %.1e\n", p.name.c_str(), err, grad_tol);
    CHECK_MESSAGE(err <= grad_tol, p.name);
    if (!(err <= worst)) worst = err, worst_name = p.name;
  }
  std::printf("%-34s %-5s worst gradient %s rel %.2e (tolerance %.0e)\n", c.name.c_str(),
              std::is_same_v<T, float> ? "fp32" : "bf16", worst_name.c_str(), worst, grad_tol);
  DILATRON_CUDA_CHECK(cudaStreamDestroy(stream));
}

std::vector<Case> cases() {
  GptShape learned{2, 64, 4, 100, 32, 0, PositionKind::learned, NormKind::layernorm};
  GptShape rotary{3, 48, 3, 77, 40, 0, PositionKind::rotary, NormKind::rmsnorm};
  rotary.recompute = true;
  GptShape dilated{2, 64, 4, 96, 64, 0, PositionKind::rotary, NormKind::layernorm};
  // 128 tokens drawn from 8192: almost all distinct, the embedding backward's largest layout
  // (model/token_buckets.h), which overflowed its buffers before d255496.
  GptShape distinct{2, 64, 4, 8192, 64, 0, PositionKind::learned, NormKind::layernorm};
  return {{"dense, layernorm, learned", learned, 3, {}},
          {"dense, tokens almost all distinct", distinct, 2, {}},
          {"dense, rmsnorm, rotary, recompute", rotary, 2, {}},
          {"dilated longnet, rotary", dilated, 2, {{16, 1}, {32, 2}, {64, 4}}}};
}

// fp32 differs from the CPU only in summation order (cuBLASLt, block reductions): 1e-4 on
// gradients, whose entries are sums over all tokens. bf16 rounds every activation to 8 bits
// through L layers: 2e-2 on loss and logits, 6e-2 on gradients (relative norms, so a wrong
// index or a missing term, at order 1, is still far outside).
TEST_CASE("GPU model in fp32 equals the CPU model") {
  for (const Case& c : cases()) check_against_cpu<float>(c, 1e-5, 1e-4, 1e-4);
}

TEST_CASE("GPU model in bf16 tracks the CPU model") {
  for (const Case& c : cases()) check_against_cpu<bf16>(c, 2e-2, 2e-2, 6e-2);
}

TEST_CASE("the training step allocates no device memory after the first") {
  GptShape s{2, 64, 4, 100, 64, 0, PositionKind::rotary, NormKind::layernorm};
  const int B = 2;
  const int64_t N = static_cast<int64_t>(B) * s.seq_len;
  std::vector<int32_t> tokens(N), targets(N);
  random_tokens(tokens, s.vocab_size, 1);
  random_tokens(targets, s.vocab_size, 2);
  cudaStream_t stream;
  DILATRON_CUDA_CHECK(cudaStreamCreate(&stream));
  DeviceParameters params(s);
  std::vector<float> init(params.num_params());
  gpt_init_params(s, 5, init.data());
  DILATRON_CUDA_CHECK(
      cudaMemcpy(params.params_for_update(), init.data(), init.size() * sizeof(float), cudaMemcpyHostToDevice));
  GptCuda<bf16> model(s, B, params, nullptr, stream);
  model.forward_backward(tokens.data(), targets.data(), B, s.seq_len, 0, 1.0 / N);
  size_t free_before = 0, free_after = 0, total = 0;
  DILATRON_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
  for (int i = 0; i < 3; ++i) model.forward_backward(tokens.data(), targets.data(), B, s.seq_len, 0, 1.0 / N);
  DILATRON_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
  CHECK(free_after == free_before);
  DILATRON_CUDA_CHECK(cudaStreamDestroy(stream));
}

// The same parameters without a version, as a ZeRO-3 source hands them out: the model then makes
// its bf16 copies at every acquire.
class UnversionedSource final : public ParameterSource<float> {
 public:
  explicit UnversionedSource(DeviceParameters& params) : params_(params) {}
  const float* acquire(int group) override { return params_.acquire(group); }
  void release(int group) override { params_.release(group); }
  float* acquire_gradients(int group) override { return params_.acquire_gradients(group); }
  void gradients_done(int group) override { params_.gradients_done(group); }

 private:
  DeviceParameters& params_;
};

TEST_CASE("the bf16 copies kept across micro-batches follow every parameter update") {
  GptShape s{2, 64, 4, 100, 64, 0, PositionKind::rotary, NormKind::layernorm};
  const int B = 2;
  const int64_t N = static_cast<int64_t>(B) * s.seq_len;
  std::vector<int32_t> tokens(N), targets(N);
  random_tokens(tokens, s.vocab_size, 3);
  random_tokens(targets, s.vocab_size, 4);
  cudaStream_t stream;
  DILATRON_CUDA_CHECK(cudaStreamCreate(&stream));
  DeviceParameters params(s);
  UnversionedSource unversioned(params);
  GptCuda<bf16> kept(s, B, params, nullptr, stream), remade(s, B, unversioned, nullptr, stream);
  // 2 bytes per parameter: every group's copy instead of two groups'.
  CHECK(kept.activation_bytes() > remade.activation_bytes());
  std::vector<float> values(params.num_params());
  std::vector<double> losses;
  for (uint64_t seed : {5, 6, 7}) {
    gpt_init_params(s, seed, values.data());
    // Queued on the model's stream, as the optimizer step is.
    DILATRON_CUDA_CHECK(cudaMemcpyAsync(params.params_for_update(), values.data(), values.size() * sizeof(float),
                                        cudaMemcpyHostToDevice, stream));
    // The first pass after the update converts again, the second reuses its copies.
    for (int pass = 0; pass < 2; ++pass) {
      const double want = remade.forward(tokens.data(), targets.data(), B, s.seq_len);
      const double got = kept.forward(tokens.data(), targets.data(), B, s.seq_len);
      INFO("seed ", seed, " pass ", pass);
      CHECK(got == want);
      losses.push_back(got);
    }
  }
  // Each update changed the loss, so a stale copy could not have passed.
  CHECK(losses[0] != losses[2]);
  CHECK(losses[2] != losses[4]);
  DILATRON_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("queued passes give the losses and gradients of forward_backward, their losses taken once") {
  GptShape s{2, 64, 4, 100, 64, 0, PositionKind::learned, NormKind::layernorm};
  const int B = 2, kPasses = 5;  // the two loss slots are each reused
  const int64_t N = static_cast<int64_t>(B) * s.seq_len;
  std::vector<std::vector<int32_t>> tokens(kPasses, std::vector<int32_t>(N)), targets = tokens;
  for (int p = 0; p < kPasses; ++p) {
    random_tokens(tokens[p], s.vocab_size, 10 + p);
    random_tokens(targets[p], s.vocab_size, 20 + p);
    targets[p][p] = -1;
  }
  cudaStream_t stream;
  DILATRON_CUDA_CHECK(cudaStreamCreate(&stream));
  DeviceParameters params(s);
  std::vector<float> init(params.num_params());
  gpt_init_params(s, 9, init.data());
  DILATRON_CUDA_CHECK(
      cudaMemcpy(params.params_for_update(), init.data(), init.size() * sizeof(float), cudaMemcpyHostToDevice));
  GptCuda<bf16> model(s, B, params, nullptr, stream);
  auto zero_grads = [&] {
    DILATRON_CUDA_CHECK(cudaMemsetAsync(params.grads(), 0, params.num_params() * sizeof(float), stream));
  };

  // Each pass waited for, its loss added up as the training loop used to.
  zero_grads();
  double want = 0;
  for (int p = 0; p < kPasses; ++p)
    want += model.forward_backward(tokens[p].data(), targets[p].data(), B, s.seq_len, 0, 1.0 / N);
  const std::vector<float> want_grads = download(params.grads(), params.num_params());

  // Queued back to back (the host reuses its staging buffers while the GPU is behind).
  zero_grads();
  for (int p = 0; p < kPasses; ++p)
    model.queue_forward_backward(tokens[p].data(), targets[p].data(), B, s.seq_len, 0, 1.0 / N);
  const double got = model.take_queued_loss();
  const std::vector<float> got_grads = download(params.grads(), params.num_params());
  std::printf("queued passes: loss %.17g, one at a time %.17g\n", got, want);
  CHECK(got == want);
  CHECK(std::memcmp(got_grads.data(), want_grads.data(), want_grads.size() * sizeof(float)) == 0);
  CHECK(model.take_queued_loss() == 0.0);  // taken: nothing left
  DILATRON_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace dilatron
#endif
