#include "trainer/batch_layout.h"

#include "core/check.h"

namespace dilatron {

BatchLayout make_batch_layout(int64_t batch_size, int64_t micro_batch_size, int64_t seq_len, int dp_rank,
                              int dp_size, int sp_rank, int sp_size) {
  DILATRON_CHECK_INPUT(batch_size % dp_size == 0,
                       "data.batch_size: {} sequences do not split over {} data-parallel ranks (world size / "
                       "parallel.sequence_parallel); use a multiple of {}",
                       batch_size, dp_size, dp_size);
  DILATRON_CHECK_INPUT(seq_len % sp_size == 0, "model.seq_len: {} does not split into {} equal chunks", seq_len,
                       sp_size);
  BatchLayout l;
  l.batch_size = batch_size;
  l.per_rank = batch_size / dp_size;
  l.micro = micro_batch_size > 0 ? micro_batch_size : l.per_rank;
  DILATRON_CHECK_INPUT(l.micro <= l.per_rank && l.per_rank % l.micro == 0,
                       "data.micro_batch_size: {} must divide the {} sequences each data-parallel rank gets "
                       "(data.batch_size {} over {} ranks)",
                       l.micro, l.per_rank, batch_size, dp_size);
  l.first_seq = dp_rank * l.per_rank;
  l.seq_len = seq_len;
  l.chunk_len = seq_len / sp_size;
  l.chunk_begin = sp_rank * l.chunk_len;
  return l;
}

int64_t fill_train_micro_batch(const TokenData& data, const BatchLayout& l, uint64_t seed, int64_t step,
                               int64_t micro_index, std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  const int64_t first = micro_index * l.micro;
  const int64_t rows = std::min(l.micro, l.per_rank - first);
  inputs.resize(l.micro * l.chunk_len);
  targets.resize(l.micro * l.chunk_len);
  for (int64_t r = 0; r < rows; ++r)
    data.train_sequence(seed, step, l.first_seq + first + r, l.chunk_begin, l.chunk_len,
                        inputs.data() + r * l.chunk_len, targets.data() + r * l.chunk_len);
  return rows;
}

ValSlice val_slice(int64_t total, int dp_rank, int dp_size) {
  // Ranks get equal shares and the remainder goes to the lowest ranks, so every window counts once.
  const int64_t base = total / dp_size, extra = total % dp_size;
  ValSlice s;
  s.count = base + (dp_rank < extra ? 1 : 0);
  s.first = dp_rank * base + std::min<int64_t>(dp_rank, extra);
  return s;
}

}  // namespace dilatron
