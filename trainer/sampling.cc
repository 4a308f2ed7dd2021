#include "trainer/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"

namespace dilatron {

int32_t sample_token(const float* logits, int vocab, double temperature, int top_k, double uniform01) {
  DILATRON_CHECK(temperature > 0 && vocab > 0);
  int k = (top_k <= 0 || top_k > vocab) ? vocab : top_k;
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  // Ties broken by index so the draw does not depend on the sort's stability.
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  double max_logit = logits[order[0]];
  std::vector<double> weights(k);
  double total = 0;
  for (int i = 0; i < k; ++i) {
    weights[i] = std::exp((logits[order[i]] - max_logit) / temperature);
    total += weights[i];
  }
  double target = uniform01 * total, cumulative = 0;
  for (int i = 0; i < k; ++i) {
    cumulative += weights[i];
    if (target <= cumulative) return order[i];
  }
  return order[k - 1];
}

std::vector<int32_t> sample_continuation(Gpt<float>& model, const std::vector<int32_t>& prompt,
                                         const SamplingOptions& options, CounterRng& rng) {
  DILATRON_CHECK_INPUT(!prompt.empty(), "--prompt: the prompt must hold at least one token");
  const int vocab = model.shape().vocab_size, window_len = model.shape().seq_len;
  for (int32_t t : prompt)
    DILATRON_CHECK_INPUT(t >= 0 && t < vocab, "--prompt: token {} is outside the vocabulary of {}", t, vocab);
  std::vector<int32_t> context = prompt, generated, window(window_len);
  for (int64_t i = 0; i < options.tokens; ++i) {
    // The model always sees a full window (dilated segments must divide it), padded on the
    // right; under causal attention the padding cannot change the logits at len - 1.
    const int len = static_cast<int>(std::min<size_t>(context.size(), window_len));
    std::copy(context.end() - len, context.end(), window.begin());
    std::fill(window.begin() + len, window.end(), 0);
    model.forward(window.data(), nullptr, 1, window_len);
    const float* last = model.logits() + static_cast<size_t>(len - 1) * vocab;
    int32_t next = sample_token(last, vocab, options.temperature, options.top_k, rng.uniform());
    context.push_back(next);
    generated.push_back(next);
  }
  return generated;
}

}  // namespace dilatron
