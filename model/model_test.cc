// The whole GPT: parameter layout, init, every parameter gradient against fp64 finite
// differences, fp32 against fp64, and recompute leaving results bitwise unchanged.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "attention/grad_check.h"
#include "core/check.h"
#include "core/rng.h"
#include "model/gpt.h"

using namespace dilatron;

namespace {

GptShape tiny(PositionKind position, NormKind norm) {
  GptShape s{.n_layers = 2, .d_model = 8, .n_heads = 2, .vocab_size = 11, .seq_len = 5, .d_ff = 0};
  s.position = position;
  s.norm = norm;
  return s;
}

std::vector<int32_t> random_tokens(int64_t n, int vocab, uint64_t seed) {
  CounterRng rng(seed, /*stream=*/1);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int32_t& t : out) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return out;
}

const ParamSpec& spec_named(const std::vector<ParamSpec>& specs, const std::string& name) {
  for (const ParamSpec& p : specs)
    if (p.name == name) return p;
  FAIL("no parameter named " << name);
  return specs.front();
}

}  // namespace

TEST_CASE("parameter specs: order, contiguity, groups, weight decay") {
  // GPT-2 small with a tied LM head has 124,439,808 parameters.
  const GptShape gpt2{.n_layers = 12, .d_model = 768, .n_heads = 12, .vocab_size = 50257,
                      .seq_len = 1024, .d_ff = 0, .position = PositionKind::learned};
  CHECK(gpt_num_params(gpt2) == 124439808);

  for (NormKind norm : {NormKind::layernorm, NormKind::rmsnorm}) {
    const GptShape s = tiny(PositionKind::rotary, norm);
    const auto specs = gpt_param_specs(s);
    int64_t offset = 0;
    int group = 0;
    for (const ParamSpec& p : specs) {
      CAPTURE(p.name);
      CHECK(p.offset == offset);
      CHECK(p.numel == shape_numel(p.shape));
      CHECK(p.group >= group);  // groups appear in order
      group = p.group;
      const bool matmul_weight = p.shape.size() == 2 && p.name != "wte" && p.name != "wpe";
      CHECK(p.weight_decay == matmul_weight);
      offset += p.numel;
    }
    CHECK(offset == gpt_num_params(s));
    CHECK(specs.front().name == "wte");
    CHECK(spec_named(specs, "blocks.1.attn.qkv.weight").shape == std::vector<int64_t>{24, 8});
    CHECK(spec_named(specs, "blocks.1.mlp.proj.weight").shape == std::vector<int64_t>{8, 32});
    CHECK(spec_named(specs, "blocks.1.ln1.weight").group == 2);
    CHECK(specs.back().group == s.n_layers + 1);
    const bool has_bias = norm == NormKind::layernorm;
    CHECK(specs.back().name == (has_bias ? "ln_f.bias" : "ln_f.weight"));
    // rotary: no position table.
    for (const ParamSpec& p : specs) CHECK(p.name != "wpe");
  }
  CHECK(gpt_param_specs(tiny(PositionKind::learned, NormKind::layernorm))[1].name == "wpe");
  GptShape odd = tiny(PositionKind::rotary, NormKind::layernorm);
  odd.n_heads = 3;
  CHECK_THROWS_AS(gpt_param_specs(odd), InputError);
}

TEST_CASE("init depends only on (seed, name, index)") {
  GptShape a{.n_layers = 2, .d_model = 64, .n_heads = 2, .vocab_size = 40, .seq_len = 8, .d_ff = 0,
             .position = PositionKind::learned};
  GptShape b{.n_layers = 3, .d_model = 64, .n_heads = 4, .vocab_size = 40, .seq_len = 16, .d_ff = 0,
             .norm = NormKind::rmsnorm};
  std::vector<double> pa(gpt_num_params(a)), pb(gpt_num_params(b)), pc(gpt_num_params(b));
  gpt_init_params(a, 42, pa.data());
  gpt_init_params(b, 42, pb.data());
  gpt_init_params(b, 43, pc.data());
  const auto sa = gpt_param_specs(a), sb = gpt_param_specs(b);
  for (const char* name : {"wte", "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc.weight"}) {
    CAPTURE(name);
    const ParamSpec &x = spec_named(sa, name), &y = spec_named(sb, name);
    REQUIRE(x.shape == y.shape);
    CHECK(std::memcmp(pa.data() + x.offset, pb.data() + y.offset, x.numel * sizeof(double)) == 0);
    CHECK(pb[y.offset] != pc[y.offset]);  // and on the seed
  }

  // Statistics: sample std within 5% (about 4 sigma for >= 2560 samples) of the target.
  auto sample_std = [&](const ParamSpec& p) {
    double s = 0;
    for (int64_t i = 0; i < p.numel; ++i) s += pb[p.offset + i] * pb[p.offset + i];
    return std::sqrt(s / p.numel);
  };
  CHECK(sample_std(spec_named(sb, "wte")) == doctest::Approx(0.02).epsilon(0.05));
  CHECK(sample_std(spec_named(sb, "blocks.0.attn.qkv.weight")) == doctest::Approx(0.02).epsilon(0.05));
  CHECK(sample_std(spec_named(sb, "blocks.2.mlp.proj.weight")) ==
        doctest::Approx(0.02 / std::sqrt(6.0)).epsilon(0.05));
  for (const ParamSpec& p : sb) {
    const bool is_bias = p.name.ends_with(".bias");
    const bool is_norm = p.name.ends_with("ln1.weight") || p.name.ends_with("ln2.weight") ||
                         p.name == "ln_f.weight";
    if (!is_bias && !is_norm) continue;
    for (int64_t i = 0; i < p.numel; ++i) CHECK(pb[p.offset + i] == (is_norm ? 1.0 : 0.0));
  }

  // fp32 init is the rounded fp64 init.
  std::vector<float> pf(pb.size());
  gpt_init_params(b, 42, pf.data());
  for (size_t i = 0; i < pf.size(); ++i) REQUIRE(pf[i] == static_cast<float>(pb[i]));
}

TEST_CASE("every parameter gradient matches finite differences (fp64)") {
  struct Case {
    PositionKind position;
    NormKind norm;
    int d_ff, Tc, pos0;
  };
  const Case cases[] = {{PositionKind::rotary, NormKind::layernorm, 0, 5, 3},
                        {PositionKind::rotary, NormKind::rmsnorm, 12, 4, 0},
                        {PositionKind::learned, NormKind::layernorm, 12, 4, 1},
                        {PositionKind::learned, NormKind::rmsnorm, 0, 5, 0}};
  for (const Case& c : cases) {
    GptShape s = tiny(c.position, c.norm);
    s.d_ff = c.d_ff;
    s.init_std = 0.5;  // large weights: every nonlinearity is exercised, gradients are O(0.1)
    CAPTURE(static_cast<int>(c.position));
    CAPTURE(static_cast<int>(c.norm));
    const int B = 2;
    Gpt<double> model(s, B);
    gpt_init_params(s, 7, model.params());
    // Norm weights and biases away from 1 and 0 so that their gradients are generic.
    const auto perturb = testing::random_normal(model.num_params(), 8, 0.1);
    for (int64_t i = 0; i < model.num_params(); ++i) model.params()[i] += perturb[i];
    const auto tokens = random_tokens(B * c.Tc, s.vocab_size, 9);
    auto targets = random_tokens(B * c.Tc, s.vocab_size, 10);
    targets[3] = -1;
    const double weight = 1.0 / (B * c.Tc - 1);  // mean over the non-ignored tokens
    auto loss = [&] { return weight * model.forward(tokens.data(), targets.data(), B, c.Tc, c.pos0); };

    model.zero_grads();
    loss();
    model.backward(weight);
    std::vector<double> analytic(model.grads(), model.grads() + model.num_params());
    for (const ParamSpec& p : model.param_specs())
      testing::check_gradient(p.name, model.params() + p.offset, analytic.data() + p.offset,
                              p.numel, loss);

    // A second backward accumulates: grads double.
    loss();
    model.backward(weight);
    for (int64_t i = 0; i < model.num_params(); ++i)
      REQUIRE(model.grads()[i] == doctest::Approx(2 * analytic[i]).epsilon(1e-12));
  }
}

TEST_CASE("fp32 model agrees with the fp64 model from the same init") {
  for (PositionKind position : {PositionKind::rotary, PositionKind::learned}) {
    GptShape s{.n_layers = 2, .d_model = 32, .n_heads = 4, .vocab_size = 50, .seq_len = 16,
               .d_ff = 0, .position = position, .norm = NormKind::rmsnorm, .init_std = 0.3};
    const int B = 3;
    Gpt<float> f(s, B);
    Gpt<double> d(s, B);
    gpt_init_params(s, 11, f.params());
    gpt_init_params(s, 11, d.params());
    const auto tokens = random_tokens(B * s.seq_len, s.vocab_size, 12);
    const auto targets = random_tokens(B * s.seq_len, s.vocab_size, 13);
    const double lf = f.forward(tokens.data(), targets.data(), B, s.seq_len);
    const double ld = d.forward(tokens.data(), targets.data(), B, s.seq_len);
    CHECK(std::abs(ld / (B * s.seq_len) - std::log(50.0)) > 0.1);  // the model is not trivial
    CHECK(lf == doctest::Approx(ld).epsilon(1e-5));

    // Gradients: relative L2 error of the whole vector within the fp32 rule of 1e-5 (it is
    // about 1e-6 here: fp32 rounding, 6e-8, amplified by the depth of the graph).
    f.zero_grads();
    d.zero_grads();
    f.backward(1.0 / (B * s.seq_len));
    d.backward(1.0 / (B * s.seq_len));
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < d.num_params(); ++i) {
      diff += (f.grads()[i] - d.grads()[i]) * (f.grads()[i] - d.grads()[i]);
      norm += d.grads()[i] * d.grads()[i];
    }
    CHECK(std::sqrt(diff / norm) < 1e-5);
  }
}

TEST_CASE("recompute changes memory, not results") {
  for (PositionKind position : {PositionKind::rotary, PositionKind::learned}) {
    GptShape s{.n_layers = 3, .d_model = 16, .n_heads = 2, .vocab_size = 13, .seq_len = 12,
               .d_ff = 0, .position = position, .init_std = 0.3};
    GptShape r = s;
    r.recompute = true;
    const int B = 2, Tc = 10;
    Gpt<float> plain(s, B), recomputed(r, B);
    gpt_init_params(s, 21, plain.params());
    gpt_init_params(r, 21, recomputed.params());
    CHECK(recomputed.activation_bytes() < plain.activation_bytes());
    const auto tokens = random_tokens(B * Tc, s.vocab_size, 22);
    const auto targets = random_tokens(B * Tc, s.vocab_size, 23);
    plain.zero_grads();
    recomputed.zero_grads();
    const double lp = plain.forward(tokens.data(), targets.data(), B, Tc, 2);
    const double lr = recomputed.forward(tokens.data(), targets.data(), B, Tc, 2);
    CHECK(lp == lr);
    plain.backward(0.1);
    recomputed.backward(0.1);
    CHECK(std::memcmp(plain.grads(), recomputed.grads(), plain.num_params() * sizeof(float)) == 0);
  }
}

TEST_CASE("forward without targets, logits lifetime and argument checks") {
  const GptShape s = tiny(PositionKind::learned, NormKind::layernorm);
  const int B = 2, Tc = 4;
  Gpt<double> model(s, B);
  gpt_init_params(s, 31, model.params());
  const auto tokens = random_tokens(B * Tc, s.vocab_size, 32);
  const auto targets = random_tokens(B * Tc, s.vocab_size, 33);

  CHECK(model.forward(tokens.data(), nullptr, B, Tc) == 0.0);
  const std::vector<double> logits(model.logits(), model.logits() + B * Tc * s.vocab_size);
  CHECK_THROWS_AS(model.backward(1.0), Error);

  // The loss is the cross-entropy of the logits just returned.
  const double loss = model.forward(tokens.data(), targets.data(), B, Tc);
  double expected = 0;
  for (int n = 0; n < B * Tc; ++n) {
    const double* row = model.logits() + n * s.vocab_size;
    CHECK(row[0] == logits[n * s.vocab_size]);
    double z = 0;
    for (int v = 0; v < s.vocab_size; ++v) z += std::exp(row[v]);
    expected += std::log(z) - row[targets[n]];
  }
  CHECK(loss == doctest::Approx(expected).epsilon(1e-12));
  model.backward(1.0);
  CHECK_THROWS_AS(model.logits(), Error);

  CHECK_THROWS_AS(model.forward(tokens.data(), nullptr, B + 1, Tc), Error);
  CHECK_THROWS_AS(model.forward(tokens.data(), nullptr, 1, s.seq_len + 1), Error);
  CHECK_THROWS_AS(model.forward(tokens.data(), nullptr, 1, Tc, s.seq_len - Tc + 1), Error);
  std::vector<int32_t> bad = tokens;
  bad[1] = s.vocab_size;
  CHECK_THROWS_AS(model.forward(bad.data(), nullptr, B, Tc), InputError);
}

TEST_CASE("gpt_activation_bytes equals the arena a model allocates") {
  for (bool recompute : {false, true})
    for (int B : {1, 3}) {
      GptShape s{3, 24, 4, 37, 13, 0};
      s.recompute = recompute;
      s.norm = B == 1 ? NormKind::rmsnorm : NormKind::layernorm;
      CAPTURE(recompute);
      CAPTURE(B);
      CHECK(gpt_activation_bytes(s, B, sizeof(float)) == static_cast<int64_t>(Gpt<float>(s, B).activation_bytes()));
      CHECK(gpt_activation_bytes(s, B, sizeof(double)) == static_cast<int64_t>(Gpt<double>(s, B).activation_bytes()));
    }
}
