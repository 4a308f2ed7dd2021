// The bridge from the typed config to the model's plain shape struct, and the one place that
// refuses configurations this build cannot run yet (loudly, before any work).
#pragma once

#include "model/gpt.h"
#include "trainer/config.h"
#include "trainer/data.h"

namespace dilatron {

GptShape gpt_shape_from(const ModelConfig& model);
DataSpec data_spec_from(const Config& config);

// Throws InputError naming the key for every feature this trainer lacks (CUDA training).
void require_supported_by_trainer(const Config& config);

}  // namespace dilatron
