// The memory `dilatron config` reports per rank before any work starts: parameters,
// gradients, optimizer state, gathered ZeRO-3 buffers and peak activations, with the tier
// each lives in.
#pragma once

#include <cstdint>
#include <string>

#include "trainer/config.h"

namespace dilatron {

struct MemoryEstimate {
  int64_t parameters = 0;         // count, whole model
  int64_t parameter_bytes = 0;    // fp32 parameters this rank holds (its shards, or all of them)
  int64_t gradient_bytes = 0;     // fp32 gradients this rank holds
  int64_t optimizer_bytes = 0;    // AdamW m and v, fp32
  int64_t gathered_bytes = 0;     // ZeRO-3: full copies of groups in use or prefetched (params + grads)
  int64_t activation_bytes = 0;   // the activation arena for one micro-batch of this rank's chunk
  // Where the parameter shards and the optimizer state live (replicated training: device).
  // Gradients, gathered groups and activations are always in working memory.
  OffloadTier params_tier = OffloadTier::device;
  OffloadTier optimizer_tier = OffloadTier::device;
  int64_t working_memory() const;   // what stays in working memory
  int64_t offloaded_bytes() const;  // parameter shards and optimizer state kept in cpu or nvme
};

// For a job of `ranks` ranks (world = parallel.sequence_parallel x data-parallel size).
MemoryEstimate estimate_memory(const Config& config, int ranks);
std::string describe_memory_estimate(const Config& config, int ranks);

}  // namespace dilatron
