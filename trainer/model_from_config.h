// The bridge from the typed config to the model's and the data's plain structs.
#pragma once

#include "model/gpt.h"
#include "trainer/config.h"
#include "trainer/data.h"

namespace dilatron {

GptShape gpt_shape_from(const ModelConfig& model);
DataSpec data_spec_from(const Config& config);

}  // namespace dilatron
