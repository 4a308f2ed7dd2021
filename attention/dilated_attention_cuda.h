// How the GPU dilated attention (attention/device_sequence_attention.h,
// make_dilated_attention_cuda) cuts a spec into batched block launches
// (attention/block_attention_cuda.h). Plain host code, so a CPU test can run the plan with the
// CPU block primitive and compare it with dilated_attention_forward/backward.
//
// One launch per branch; its tasks are every (batch, head, segment) the branch covers, in that
// order (batch outermost, so a call with B <= max_B runs the first B * tasks_per_batch tasks).
// A task is one dilated segment of one head read in place: first row s*w + o, row stride r*H*D in
// (B, n, H, D), lse stride r in (B, H, n), nq = nk = w / r, queries and keys the same rows.
//
// Outputs: when some (head, position) is covered by no launch, the outputs are cleared first
// (out = 0, lse = -inf, gradients 0). A launch then either writes its rows (the first launch,
// when nothing was cleared, or any head_groups launch: its rows belong to no other launch) or
// accumulates (longnet: LSE-merges into (out, lse), adds into dq, dk, dv). longnet puts a branch
// of rate 1 first when there is one, since it covers every row and can write.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/block_attention_cuda.h"
#include "attention/dilated_spec.h"

namespace dilatron {

struct DilatedLaunch {
  int branch;                          // index into spec.branches
  std::vector<DeviceBlockTask> tasks;  // max_B * tasks_per_batch, batch outermost
  int64_t tasks_per_batch;
  int rows;                            // nq = nk of every task: w / r
  bool accumulate;                     // merge / add into the outputs instead of writing them
};

struct DilatedPlan {
  std::vector<DilatedLaunch> launches;
  bool clear_first;  // some output row is written by no launch
  // head_groups: 1/G on the output (and on the gradient reaching each branch); 1 for longnet.
  double out_scale;
  // More than one launch adds into the same rows: bf16 outputs then go through an fp32
  // accumulator so that they are rounded once, at the end.
  bool multi_launch_accumulation;
};

// Throws InputError (validate_dilated_spec, key "attention") for a spec that does not fit n, H,
// and for D outside [1, kMaxBlockAttentionHeadDim] (key "model").
DilatedPlan plan_dilated_attention(const DilatedSpec& spec, int max_B, int64_t n, int H, int D);

}  // namespace dilatron
