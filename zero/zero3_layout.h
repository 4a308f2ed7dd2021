// How ZeRO-3 partitions the model's parameter groups over the W ranks of a world, shared by the
// host engine (zero/zero3.h) and the GPU state (trainer/device_zero3_state.cc), so both store
// the same elements on each rank and write the same checkpoint slices.
//
// Each group (ParamSpec::group) is one flat bucket, padded to a multiple of W; rank r stores
// bucket elements [r S, (r + 1) S), S = padded / W. A group below persistence_threshold
// elements stays whole on every rank (replicated).
#pragma once

#include <cstdint>
#include <vector>

#include "model/gpt.h"

namespace dilatron {

// A contiguous run of one tensor inside a stored piece, for per-tensor weight decay.
struct Zero3Segment {
  int64_t piece_offset, length;
  bool weight_decay;
};

struct Zero3GroupLayout {
  int64_t begin = 0;        // flat offset of its first parameter
  int64_t numel = 0;        // logical elements
  int64_t padded = 0;       // bucket elements: numel rounded up to a multiple of W (replicated: numel)
  int64_t local = 0;        // elements this rank stores: padded / W (replicated: numel)
  int64_t local_begin = 0;  // bucket index of the first stored element
  int64_t shard_offset = 0;  // of the stored piece in a rank's pieces laid back to back
  bool replicated = false;
  std::vector<Zero3Segment> segments;  // the logical (non-padding) elements of the stored piece
  // The part of the stored piece this rank contributes to checkpoints: [owned_lo, owned_hi);
  // a replica is owned by rank 0 alone.
  int64_t owned_lo = 0, owned_hi = 0;
};

std::vector<Zero3GroupLayout> zero3_layout(const GptShape& shape, int world_size, int rank,
                                           int64_t persistence_threshold);

// Sum of `local` over the groups: the elements of a rank's pieces back to back.
int64_t zero3_shard_elements(const std::vector<Zero3GroupLayout>& layout);

// The logical slices a rank owns (sorted, adjacent ones merged): over all ranks they partition
// [0, num_params).
struct Zero3Slice {
  int64_t logical_begin, length;
};
std::vector<Zero3Slice> zero3_owned_slices(const std::vector<Zero3GroupLayout>& layout);

// Fills a group's stored piece (local elements) with the initial parameters: each element is
// gpt_init_params' value for (seed, name, index), whatever W; padding is 0.
void zero3_init_piece(const GptShape& shape, const Zero3GroupLayout& group, int group_index, uint64_t seed,
                      float* piece);

}  // namespace dilatron
