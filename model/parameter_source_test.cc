// The ParameterSource seam: the order in which the model acquires and releases groups, that
// a model reading its parameters group by group from separate buffers gives bitwise the
// results of the resident model, and per-range initialisation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "model/gpt.h"

using namespace dilatron;

namespace {

std::vector<int32_t> random_tokens(int64_t n, int vocab, uint64_t seed) {
  CounterRng rng(seed, /*stream=*/1);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (int32_t& t : out) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return out;
}

// Every group in its own buffer, handed out like ZeRO-3 does: parameters copied in on acquire
// and poisoned (NaN) on release, gradients zeroed on acquire and added to a per-group total on
// gradients_done, then poisoned. Using a group outside its acquisition shows up as NaN.
class SeparateBuffersSource final : public ParameterSource<float> {
 public:
  SeparateBuffersSource(const GptShape& shape, const float* flat_params) {
    const auto specs = gpt_param_specs(shape);
    for (const ParamSpec& p : specs) {
      if (p.group >= static_cast<int>(master_.size())) master_.resize(p.group + 1);
      master_[p.group].insert(master_[p.group].end(), flat_params + p.offset, flat_params + p.offset + p.numel);
    }
    for (const auto& m : master_) {
      live_.emplace_back(m.size(), kPoison);
      live_grads_.emplace_back(m.size(), kPoison);
      grad_totals_.emplace_back(m.size(), 0.0f);
    }
  }

  const float* acquire(int g) override {
    log_.push_back("acquire " + std::to_string(g));
    live_[g] = master_[g];
    return live_[g].data();
  }
  void release(int g) override {
    log_.push_back("release " + std::to_string(g));
    std::fill(live_[g].begin(), live_[g].end(), kPoison);
  }
  float* acquire_gradients(int g) override {
    log_.push_back("acquire_gradients " + std::to_string(g));
    std::fill(live_grads_[g].begin(), live_grads_[g].end(), 0.0f);
    return live_grads_[g].data();
  }
  void gradients_done(int g) override {
    log_.push_back("gradients_done " + std::to_string(g));
    for (size_t i = 0; i < live_grads_[g].size(); ++i) grad_totals_[g][i] += live_grads_[g][i];
    std::fill(live_grads_[g].begin(), live_grads_[g].end(), kPoison);
  }
  void will_acquire(int g) override { log_.push_back("will_acquire " + std::to_string(g)); }

  // The accumulated gradients in the flat layout.
  std::vector<float> flat_gradients() const {
    std::vector<float> out;
    for (const auto& g : grad_totals_) out.insert(out.end(), g.begin(), g.end());
    return out;
  }
  std::vector<std::string> take_log() { return std::exchange(log_, {}); }

 private:
  static constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::vector<float>> master_, live_, live_grads_, grad_totals_;
  std::vector<std::string> log_;
};

std::vector<std::string> expected_forward_log(int L) {
  std::vector<std::string> log{"will_acquire 0"};
  for (int g = 1; g <= L + 1; ++g) log.push_back("will_acquire " + std::to_string(g));
  log.push_back("will_acquire 0");
  for (int g = 0; g <= L + 1; ++g) {
    log.push_back("acquire " + std::to_string(g));
    log.push_back("release " + std::to_string(g));
  }
  log.push_back("acquire 0");
  log.push_back("release 0");
  return log;
}

std::vector<std::string> expected_backward_log(int L) {
  std::vector<std::string> log{"will_acquire 0"};
  for (int g = L + 1; g >= 1; --g) log.push_back("will_acquire " + std::to_string(g));
  log.push_back("acquire 0");
  log.push_back("acquire_gradients 0");
  for (int g = L + 1; g >= 1; --g) {
    const std::string n = std::to_string(g);
    for (const char* what : {"acquire ", "acquire_gradients ", "gradients_done ", "release "})
      log.push_back(what + n);
  }
  log.push_back("gradients_done 0");
  log.push_back("release 0");
  return log;
}

}  // namespace

TEST_CASE("a model on separate per-group buffers matches the resident model bitwise") {
  for (PositionKind position : {PositionKind::rotary, PositionKind::learned}) {
    for (NormKind norm : {NormKind::layernorm, NormKind::rmsnorm}) {
      for (bool recompute : {false, true}) {
        CAPTURE(static_cast<int>(position));
        CAPTURE(static_cast<int>(norm));
        CAPTURE(recompute);
        GptShape s{.n_layers = 3, .d_model = 16, .n_heads = 2, .vocab_size = 13, .seq_len = 12, .d_ff = 0};
        s.position = position;
        s.norm = norm;
        s.recompute = recompute;
        s.init_std = 0.3;
        const int B = 2, Tc = 9, pos0 = 3;
        Gpt<float> resident(s, B);
        gpt_init_params(s, 41, resident.params());
        SeparateBuffersSource source(s, resident.params());
        Gpt<float> external(s, B, nullptr, &source);

        const auto tokens = random_tokens(B * Tc, s.vocab_size, 42);
        const auto targets = random_tokens(B * Tc, s.vocab_size, 43);
        resident.zero_grads();
        // A second micro-batch covers accumulation across backward passes: the resident model
        // adds into the running total, the separate source adds a fresh buffer to it, so
        // that one agrees to fp32 rounding (1e-6 of the largest gradient), not bitwise.
        for (int micro = 0; micro < 2; ++micro) {
          CHECK(resident.forward(tokens.data(), targets.data(), B, Tc, pos0) ==
                external.forward(tokens.data(), targets.data(), B, Tc, pos0));
          CHECK(source.take_log() == expected_forward_log(s.n_layers));
          resident.backward(0.25);
          external.backward(0.25);
          CHECK(source.take_log() == expected_backward_log(s.n_layers));
          const std::vector<float> grads = source.flat_gradients();
          REQUIRE(static_cast<int64_t>(grads.size()) == resident.num_params());
          if (micro == 0) {
            CHECK(std::memcmp(grads.data(), resident.grads(), grads.size() * sizeof(float)) == 0);
          } else {
            float largest = 0, worst = 0;
            for (size_t i = 0; i < grads.size(); ++i) {
              largest = std::max(largest, std::abs(resident.grads()[i]));
              worst = std::max(worst, std::abs(grads[i] - resident.grads()[i]));
            }
            CHECK(largest > 0);
            CHECK(worst <= 1e-6f * largest);
          }
        }
      }
    }
  }
}

TEST_CASE("the flat-buffer accessors refuse an external source; the resident source checks the protocol") {
  GptShape s{.n_layers = 1, .d_model = 8, .n_heads = 2, .vocab_size = 7, .seq_len = 4, .d_ff = 0};
  std::vector<float> flat(static_cast<size_t>(gpt_num_params(s)));
  gpt_init_params(s, 1, flat.data());
  SeparateBuffersSource source(s, flat.data());
  Gpt<float> external(s, 1, nullptr, &source);
  CHECK_THROWS_AS(external.params(), Error);
  CHECK_THROWS_AS(external.grads(), Error);
  CHECK_THROWS_AS(external.zero_grads(), Error);
  CHECK(external.num_params() == gpt_num_params(s));
}

TEST_CASE("any range of a tensor initialises alone to the same values as the whole model") {
  GptShape s{.n_layers = 2, .d_model = 8, .n_heads = 2, .vocab_size = 11, .seq_len = 6, .d_ff = 0};
  s.position = PositionKind::learned;
  std::vector<double> flat(static_cast<size_t>(gpt_num_params(s)));
  gpt_init_params(s, 5, flat.data());
  CounterRng rng(6, 2);
  for (const ParamSpec& p : gpt_param_specs(s)) {
    CAPTURE(p.name);
    const int64_t begin = static_cast<int64_t>(rng.below(static_cast<uint64_t>(p.numel)));
    const int64_t end = begin + static_cast<int64_t>(rng.below(static_cast<uint64_t>(p.numel - begin + 1)));
    std::vector<double> part(static_cast<size_t>(end - begin) + 1, std::nan(""));
    gpt_init_param_range(p, s, 5, begin, end, part.data());
    for (int64_t i = begin; i < end; ++i) CHECK(part[i - begin] == flat[p.offset + i]);
    CHECK(std::isnan(part.back()));  // nothing written past the range
  }
  const ParamSpec wte = gpt_param_specs(s).front();
  double one = 0;
  CHECK_THROWS_AS(gpt_init_param_range(wte, s, 5, 3, wte.numel + 1, &one), Error);
}
