// The two implementations of TrainingState, chosen by make_training_state.
#pragma once

#include <memory>

#include "trainer/training_state.h"

namespace dilatron {

std::unique_ptr<TrainingState> make_replicated_state(const GptShape& shape, Communicator& world);
std::unique_ptr<TrainingState> make_zero3_state(const Config& config, const GptShape& shape, Communicator& world);

}  // namespace dilatron
