// The memory `dilatron config` reports per rank before any work starts: parameters,
// gradients, optimizer state and peak activations, by tier.
#pragma once

#include <cstdint>
#include <string>

#include "trainer/config.h"

namespace dilatron {

struct MemoryEstimate {
  int64_t parameters = 0;        // count
  int64_t parameter_bytes = 0;   // fp32 weights
  int64_t gradient_bytes = 0;    // fp32
  int64_t optimizer_bytes = 0;   // AdamW m and v, fp32
  int64_t activation_bytes = 0;  // the activation arena for one micro-batch
  int64_t total() const { return parameter_bytes + gradient_bytes + optimizer_bytes + activation_bytes; }
};

// For the single-process CPU trainer: everything lives in host memory of the one rank.
MemoryEstimate estimate_memory(const Config& config);
std::string describe_memory_estimate(const Config& config);

}  // namespace dilatron
