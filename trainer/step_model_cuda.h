// The GPU StepModel (trainer/step_model.h); its factory throws in a build without CUDA.
#pragma once

#include <memory>

#include "trainer/step_model.h"

namespace dilatron {

std::unique_ptr<StepModel> make_cuda_step_model(const Config& config, const GptShape& shape, int max_batch,
                                                TrainingState& state, ProcessGroups& groups,
                                                TrainingDevice& device);

}  // namespace dilatron
