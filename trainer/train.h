// The single-process training loop: data -> micro-batches -> forward/backward -> clip ->
// AdamW -> metrics, validation, checkpoints, and a sample at the end.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "trainer/config.h"

namespace dilatron {

struct TrainOptions {
  // "" starts fresh (refusing a run_dir that already holds checkpoints), "auto" continues from
  // the newest valid checkpoint of logging.run_dir if there is one, anything else is a
  // checkpoint directory to continue from.
  std::string resume;
  // Stop (with a checkpoint) once this many optimizer steps are complete, without changing
  // the schedule, which still runs to schedule.max_steps. For jobs cut into time slots.
  std::optional<int64_t> stop_at_step;
};

struct TrainSummary {
  int64_t steps_done = 0;       // optimizer steps complete at exit
  double last_loss = 0;
  std::optional<double> last_val_loss;
  bool stopped_by_signal = false;
  std::string last_checkpoint;  // "" if none was written
};

TrainSummary run_training(const Config& config, const TrainOptions& options);

}  // namespace dilatron
