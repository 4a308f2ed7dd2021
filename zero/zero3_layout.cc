#include "zero/zero3_layout.h"

#include <algorithm>

namespace dilatron {

std::vector<Zero3GroupLayout> zero3_layout(const GptShape& shape, int world_size, int rank,
                                           int64_t persistence_threshold) {
  const std::vector<ParamSpec> specs = gpt_param_specs(shape);
  const int64_t W = world_size;
  std::vector<Zero3GroupLayout> groups(static_cast<size_t>(shape.n_layers) + 2);
  for (const ParamSpec& p : specs) {
    Zero3GroupLayout& grp = groups[p.group];
    if (grp.numel == 0) grp.begin = p.offset;
    grp.numel += p.numel;
  }
  int64_t shard_offset = 0;
  for (Zero3GroupLayout& grp : groups) {
    grp.replicated = grp.numel < persistence_threshold;
    grp.padded = grp.replicated ? grp.numel : (grp.numel + W - 1) / W * W;
    grp.local = grp.replicated ? grp.numel : grp.padded / W;
    grp.local_begin = grp.replicated ? 0 : rank * grp.local;
    grp.shard_offset = shard_offset;
    shard_offset += grp.local;
    grp.owned_lo = 0;
    grp.owned_hi = grp.replicated ? (rank == 0 ? grp.numel : 0)
                                  : std::max<int64_t>(0, std::min(grp.local, grp.numel - grp.local_begin));
  }
  for (const ParamSpec& p : specs) {
    Zero3GroupLayout& grp = groups[p.group];
    const int64_t lo = std::max(p.offset - grp.begin, grp.local_begin);
    const int64_t hi = std::min(p.offset - grp.begin + p.numel, grp.local_begin + grp.local);
    if (hi > lo) grp.segments.push_back({lo - grp.local_begin, hi - lo, p.weight_decay});
  }
  return groups;
}

int64_t zero3_shard_elements(const std::vector<Zero3GroupLayout>& layout) {
  int64_t n = 0;
  for (const Zero3GroupLayout& grp : layout) n += grp.local;
  return n;
}

std::vector<Zero3Slice> zero3_owned_slices(const std::vector<Zero3GroupLayout>& layout) {
  std::vector<Zero3Slice> out;
  for (const Zero3GroupLayout& grp : layout) {
    if (grp.owned_hi <= grp.owned_lo) continue;
    const int64_t begin = grp.begin + grp.local_begin + grp.owned_lo, length = grp.owned_hi - grp.owned_lo;
    if (!out.empty() && out.back().logical_begin + out.back().length == begin)
      out.back().length += length;
    else
      out.push_back({begin, length});
  }
  return out;
}

void zero3_init_piece(const GptShape& shape, const Zero3GroupLayout& grp, int group_index, uint64_t seed,
                      float* piece) {
  std::fill_n(piece, grp.local, 0.0f);
  for (const ParamSpec& p : gpt_param_specs(shape)) {
    if (p.group != group_index) continue;
    const int64_t lo = std::max(p.offset - grp.begin, grp.local_begin);
    const int64_t hi = std::min(p.offset - grp.begin + p.numel, grp.local_begin + grp.local);
    if (hi > lo)
      gpt_init_param_range(p, shape, seed, lo - (p.offset - grp.begin), hi - (p.offset - grp.begin),
                           piece + (lo - grp.local_begin));
  }
}

}  // namespace dilatron
