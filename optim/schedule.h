// Learning-rate schedule: linear warmup, then cosine decay to a floor (as in GPT-2/3 training).
#pragma once

#include <cstdint>

namespace dilatron {

struct LrSchedule {
  float max_lr;
  int64_t warmup_steps, max_steps;
  float min_lr_ratio;  // the floor is max_lr * min_lr_ratio
};

// step is 0-based. Warmup: max_lr * (step + 1) / warmup_steps for step < warmup_steps, so the
// first step already trains. Then cosine from max_lr down to the floor at step == max_steps,
// held at the floor after that.
float lr_at(const LrSchedule& schedule, int64_t step);

}  // namespace dilatron
