// Which part of each global batch a rank handles. Data-parallel rank d takes the sequences
// [d * per_rank, (d + 1) * per_rank) of every step's batch; sequence-parallel rank s takes
// positions [s * chunk, (s + 1) * chunk) of each of them. The union over ranks is the whole
// batch, so the loss and gradients summed over the world equal the single-rank ones.
#pragma once

#include <cstdint>
#include <vector>

#include "trainer/data.h"

namespace dilatron {

struct BatchLayout {
  int64_t batch_size = 0;   // sequences per optimizer step, whole job
  int64_t per_rank = 0;     // sequences per data-parallel rank
  int64_t micro = 0;        // sequences per forward/backward
  int64_t first_seq = 0;    // this rank's first sequence index within the batch
  int64_t seq_len = 0;      // full sequence length
  int64_t chunk_begin = 0;  // this rank's positions
  int64_t chunk_len = 0;
};

// Throws InputError naming data.batch_size / data.micro_batch_size / model.seq_len when the
// batch or the sequence does not split evenly over dp_size x sp_size ranks.
BatchLayout make_batch_layout(int64_t batch_size, int64_t micro_batch_size, int64_t seq_len, int dp_rank,
                              int dp_size, int sp_rank, int sp_size);

// Fills rows [0, rows) of inputs/targets (rows x chunk_len) with the sequences
// first_seq + micro_index * micro + r of training step `step`; returns rows.
int64_t fill_train_micro_batch(const TokenData& data, const BatchLayout& layout, uint64_t seed, int64_t step,
                               int64_t micro_index, std::vector<int32_t>& inputs, std::vector<int32_t>& targets);

// Validation: the first `count` validation windows, split over data-parallel ranks the same way.
struct ValSlice {
  int64_t first = 0, count = 0;
};
ValSlice val_slice(int64_t total, int dp_rank, int dp_size);

}  // namespace dilatron
