#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/check.h"

namespace dilatron {

float lr_at(const LrSchedule& schedule, int64_t step) {
  DILATRON_CHECK_INPUT(schedule.warmup_steps >= 0 && schedule.max_steps >= schedule.warmup_steps,
                       "lr schedule needs 0 <= warmup_steps <= max_steps, got warmup {} max {}",
                       schedule.warmup_steps, schedule.max_steps);
  DILATRON_CHECK_INPUT(schedule.min_lr_ratio >= 0.0f && schedule.min_lr_ratio <= 1.0f,
                       "lr schedule min_lr_ratio must lie in [0, 1], got {}", schedule.min_lr_ratio);
  DILATRON_CHECK(step >= 0, "lr_at takes a 0-based step, got {}", step);
  const double max_lr = schedule.max_lr;
  if (step < schedule.warmup_steps)
    return static_cast<float>(max_lr * static_cast<double>(step + 1) / static_cast<double>(schedule.warmup_steps));
  const double min_lr = max_lr * schedule.min_lr_ratio;
  const int64_t decay_steps = schedule.max_steps - schedule.warmup_steps;
  const double progress =
      decay_steps == 0 ? 1.0
                       : std::min(1.0, static_cast<double>(step - schedule.warmup_steps) / static_cast<double>(decay_steps));
  return static_cast<float>(min_lr + (max_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

}  // namespace dilatron
