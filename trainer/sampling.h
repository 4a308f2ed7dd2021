// Autoregressive sampling from a trained model: temperature and top-k over the last
// position's logits, drawn from a counter-based generator so a seed reproduces the text.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "model/gpt.h"

namespace dilatron {

struct SamplingOptions {
  int64_t tokens = 200;
  double temperature = 1.0;  // > 0
  int top_k = 0;             // 0: the whole vocabulary
};

// Returns only the new tokens. Each one runs the model over the last seq_len tokens, padded
// to a full window; the model's attention must be causal.
std::vector<int32_t> sample_continuation(Gpt<float>& model, const std::vector<int32_t>& prompt,
                                         const SamplingOptions& options, CounterRng& rng);

// Index drawn from softmax(logits / temperature) restricted to the top_k largest logits.
int32_t sample_token(const float* logits, int vocab, double temperature, int top_k, double uniform01);

}  // namespace dilatron
