// Synthetic training state for the sharded checkpoint tests: a tensor table shaped like a tiny
// GPT's, three kinds whose elements are a pure function of (seed, kind, logical index)
// (Philox normals), and uneven per-kind slicings for any world size that cross tensor
// boundaries, give some ranks two or three slices and, in worlds of 4 or more, none to the last.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "trainer/sharded_checkpoint.h"

namespace dilatron::testing {

inline const std::vector<std::string> kKinds = {"params", "adam_m", "adam_v"};

inline std::vector<CheckpointTensor> synthetic_table() {
  const std::vector<std::pair<std::string, std::vector<int64_t>>> specs = {
      {"wte", {37, 8}},          {"blocks.0.ln1.weight", {8}}, {"blocks.0.attn.qkv.weight", {24, 8}},
      {"blocks.0.attn.qkv.bias", {24}}, {"ln_f.weight", {8}}};
  std::vector<CheckpointTensor> table;
  int64_t offset = 0;
  for (const auto& [name, shape] : specs) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    table.push_back({name, shape, offset, numel});
    offset += numel;
  }
  return table;  // 528 elements
}

inline int64_t synthetic_numel() {
  const auto table = synthetic_table();
  return table.back().logical_offset + table.back().numel;
}

inline float synthetic_value(uint64_t seed, const std::string& kind, int64_t i) {
  return static_cast<float>(philox_normal(philox_key(seed), name_stream(kind), static_cast<uint64_t>(i)));
}

// [begin, end) ranges of `kind` that `rank` of a `world`-rank run owns: 2 * world + 1 pieces
// between random cut points, piece j going to rank j % world (so a rank's pieces are not
// adjacent); with 4 or more ranks the last rank's pieces go to rank 0.
inline std::vector<std::pair<int64_t, int64_t>> owned_ranges(const std::string& kind, int world, int rank) {
  const int64_t total = synthetic_numel();
  CounterRng rng(1234, name_stream(kind) + static_cast<uint64_t>(world));
  std::set<int64_t> cuts;
  while (static_cast<int>(cuts.size()) < 2 * world) cuts.insert(1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(total - 1))));
  std::vector<int64_t> bounds = {0};
  bounds.insert(bounds.end(), cuts.begin(), cuts.end());
  bounds.push_back(total);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (size_t j = 0; j + 1 < bounds.size(); ++j) {
    int owner = static_cast<int>(j) % world;
    if (world >= 4 && owner == world - 1) owner = 0;
    if (owner == rank) ranges.emplace_back(bounds[j], bounds[j + 1]);
  }
  return ranges;
}

// One rank's slices of every kind, with the buffers they point into.
struct RankState {
  std::vector<std::vector<float>> buffers;
  std::vector<OwnedSlice> slices;
};

inline RankState synthetic_rank_state(uint64_t seed, int world, int rank) {
  RankState state;
  for (const std::string& kind : kKinds) {
    for (const auto& [begin, end] : owned_ranges(kind, world, rank)) {
      std::vector<float>& buffer = state.buffers.emplace_back();
      for (int64_t i = begin; i < end; ++i) buffer.push_back(synthetic_value(seed, kind, i));
    }
  }
  size_t b = 0;
  for (const std::string& kind : kKinds) {
    for (const auto& [begin, end] : owned_ranges(kind, world, rank))
      state.slices.push_back({kind, begin, end - begin, state.buffers[b++].data()});
  }
  return state;
}

// Reads [begin, begin + length) of `kind` into a NaN-poisoned buffer and counts the elements
// that differ from the formula.
inline int64_t count_wrong(const ShardedCheckpoint& checkpoint, uint64_t seed, const std::string& kind, int64_t begin,
                           int64_t length) {
  std::vector<float> out(static_cast<size_t>(length), std::nanf(""));
  checkpoint.read(kind, begin, length, out.data());
  int64_t wrong = 0;
  for (int64_t i = 0; i < length; ++i) wrong += out[static_cast<size_t>(i)] != synthetic_value(seed, kind, begin + i) ? 1 : 0;
  return wrong;
}

}  // namespace dilatron::testing
