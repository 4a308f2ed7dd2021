// Times forward + backward of a small fp32 GPT (the size of the default training run).
#include <chrono>
#include <cstdio>
#include <vector>

#include "model/gpt.h"

int main() {
  using namespace dilatron;
  GptShape shape{.n_layers = 4, .d_model = 128, .n_heads = 4, .vocab_size = 65, .seq_len = 128,
                 .d_ff = 0};
  const int B = 16;
  Gpt<float> model(shape, B);
  gpt_init_params(shape, 1, model.params());
  std::vector<int32_t> tokens(B * shape.seq_len), targets(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = static_cast<int32_t>(i * 7 % shape.vocab_size);
    targets[i] = static_cast<int32_t>((i * 7 + 3) % shape.vocab_size);
  }
  for (int step = 0; step < 4; ++step) {
    const auto start = std::chrono::steady_clock::now();
    model.zero_grads();
    const double loss = model.forward(tokens.data(), targets.data(), B, shape.seq_len);
    model.backward(1.0 / static_cast<double>(tokens.size()));
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("step %d: loss %.4f, forward+backward %.1f ms, activations %.1f MiB\n", step,
                loss / static_cast<double>(tokens.size()), ms,
                static_cast<double>(model.activation_bytes()) / (1 << 20));
  }
}
