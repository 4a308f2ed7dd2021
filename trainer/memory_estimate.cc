#include "trainer/memory_estimate.h"

#include <algorithm>
#include <map>

#include <fmt/core.h>

#include "core/check.h"
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

const char* tier_name(OffloadTier t) { return t == OffloadTier::device ? "working memory" : t == OffloadTier::cpu ? "cpu" : "nvme"; }

}  // namespace

int64_t MemoryEstimate::working_memory() const {
  return (params_tier == OffloadTier::device ? parameter_bytes : 0) + gradient_bytes +
         (optimizer_tier == OffloadTier::device ? optimizer_bytes : 0) + gathered_bytes + activation_bytes;
}

int64_t MemoryEstimate::offloaded_bytes() const {
  return (params_tier != OffloadTier::device ? parameter_bytes : 0) +
         (optimizer_tier != OffloadTier::device ? optimizer_bytes : 0);
}

MemoryEstimate estimate_memory(const Config& config, int ranks) {
  DILATRON_CHECK_INPUT(ranks >= 1 && ranks % config.parallel.sequence_parallel == 0,
                       "--ranks: {} is not a multiple of parallel.sequence_parallel = {}", ranks,
                       config.parallel.sequence_parallel);
  const GptShape shape = gpt_shape_from(config.model);
  const int sp = config.parallel.sequence_parallel, dp = ranks / sp;
  MemoryEstimate m;
  m.parameters = gpt_num_params(shape);
  if (config.zero.stage == 3) {
    // Per group: a bucket padded to a multiple of the world, 1/world of it per rank, unless
    // the group is under the persistence threshold and stays replicated.
    std::map<int, int64_t> group_size;
    for (const ParamSpec& p : gpt_param_specs(shape)) group_size[p.group] += p.numel;
    int64_t owned = 0, largest = 0;
    for (auto [group, numel] : group_size) {
      owned += numel < config.zero.persistence_threshold ? numel : (numel + ranks - 1) / ranks;
      largest = std::max(largest, numel);
    }
    m.parameter_bytes = 4 * owned;
    m.gradient_bytes = 4 * owned;
    m.optimizer_bytes = 8 * owned;
    // The group in use plus prefetch_depth ahead, parameters and (in backward) gradients.
    m.gathered_bytes = 4 * largest * (config.zero.prefetch_depth + 1) * 2;
    m.params_tier = config.zero.offload_params;
    m.optimizer_tier = config.zero.offload_optimizer;
  } else {
    m.parameter_bytes = 4 * m.parameters;
    m.gradient_bytes = 4 * m.parameters;
    m.optimizer_bytes = 8 * m.parameters;
  }
  const int64_t per_rank = config.data.batch_size / std::max(dp, 1);
  const int64_t micro = config.data.micro_batch_size > 0 ? config.data.micro_batch_size : std::max<int64_t>(per_rank, 1);
  GptShape chunk = shape;
  chunk.seq_len = shape.seq_len / sp;
  m.activation_bytes = gpt_activation_bytes(chunk, static_cast<int>(micro), sizeof(float));
  return m;
}

std::string describe_memory_estimate(const Config& config, int ranks) {
  MemoryEstimate m = estimate_memory(config, ranks);
  const int sp = config.parallel.sequence_parallel;
  std::string layout = fmt::format("{} ranks = {} data-parallel x {} sequence-parallel", ranks, ranks / sp, sp);
  if (config.zero.stage != 3)
    return fmt::format("{} parameters; {}; memory per rank (replicated): parameters {}, gradients {}, optimizer "
                       "state {}, activations (peak, one micro-batch) {}; total {}\n",
                       m.parameters, layout, human_bytes(m.parameter_bytes), human_bytes(m.gradient_bytes),
                       human_bytes(m.optimizer_bytes), human_bytes(m.activation_bytes), human_bytes(m.working_memory()));
  return fmt::format("{} parameters; {}; memory per rank (ZeRO-3): parameter shards {} in {}, gradient shards {}, "
                     "optimizer state {} in {}, gathered groups (peak) {}, activations (peak, one micro-batch) {}; "
                     "working memory {}, offloaded to cpu/nvme {}\n",
                     m.parameters, layout, human_bytes(m.parameter_bytes), tier_name(config.zero.offload_params),
                     human_bytes(m.gradient_bytes), human_bytes(m.optimizer_bytes),
                     tier_name(config.zero.offload_optimizer), human_bytes(m.gathered_bytes),
                     human_bytes(m.activation_bytes), human_bytes(m.working_memory()),
                     human_bytes(m.offloaded_bytes()));
}

}  // namespace dilatron
