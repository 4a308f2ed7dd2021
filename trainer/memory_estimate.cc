#include "trainer/memory_estimate.h"

#include <fmt/core.h>

#include "model/gpt.h"
#include "trainer/model_from_config.h"

namespace dilatron {
namespace {

std::string human_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return fmt::format("{:.1f} {}", v, units[u]);
}

}  // namespace

MemoryEstimate estimate_memory(const Config& config) {
  const GptShape shape = gpt_shape_from(config.model);
  MemoryEstimate m;
  m.parameters = gpt_num_params(shape);
  m.parameter_bytes = m.parameters * 4;
  m.gradient_bytes = m.parameters * 4;
  m.optimizer_bytes = m.parameters * 8;
  m.activation_bytes = gpt_activation_bytes(shape, static_cast<int>(micro_batch_of(config.data)), sizeof(float));
  return m;
}

std::string describe_memory_estimate(const Config& config) {
  MemoryEstimate m = estimate_memory(config);
  return fmt::format(
      "{} parameters; memory per rank (1 rank, all in host memory): parameters {}, gradients {}, "
      "optimizer state {}, activations (peak, one micro-batch) {}; total {}\n",
      m.parameters, human_bytes(m.parameter_bytes), human_bytes(m.gradient_bytes), human_bytes(m.optimizer_bytes),
      human_bytes(m.activation_bytes), human_bytes(m.total()));
}

}  // namespace dilatron
