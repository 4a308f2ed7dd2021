// The training loop: data -> micro-batches -> forward/backward -> gradient all-reduce ->
// clip -> AdamW -> metrics, validation, checkpoints, and a sample at the end.
//
// Every rank of the world runs it. Parameters are replicated; each rank computes the loss
// terms of its part of the batch (BatchLayout), weighted by 1 / (global tokens), so summing
// gradients over the world gives exactly the single-rank gradient (summed over
// sequence-parallel ranks, averaged over data-parallel ranks).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "comm/process_groups.h"
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

// groups.world must hold parallel.sequence_parallel x (data-parallel size) ranks.
TrainSummary run_training(const Config& config, const TrainOptions& options, ProcessGroups& groups);

}  // namespace dilatron
