#include "attention/dilated_spec.h"

#include <algorithm>

#include "core/check.h"

namespace dilatron {

HeadRange branch_heads(const DilatedSpec& spec, int branch, int H) {
  if (spec.mode == DilatedMode::longnet) return {0, H};
  const int G = static_cast<int>(spec.branches.size());
  const int base = H / G, extra = H % G;
  const int begin = branch * base + std::min(branch, extra);
  return {begin, begin + base + (branch < extra ? 1 : 0)};
}

int64_t head_offset(const DilatedSpec& spec, int branch, int h) {
  const int64_t r = spec.branches[branch].dilation;
  return spec.mode == DilatedMode::longnet ? h % r : branch % r;
}

void validate_dilated_spec(const DilatedSpec& spec, int64_t n, int heads, const char* key) {
  DILATRON_CHECK_INPUT(!spec.branches.empty(), "{}.segment_lengths: needs at least one branch", key);
  for (size_t i = 0; i < spec.branches.size(); ++i) {
    const auto [w, r] = spec.branches[i];
    DILATRON_CHECK_INPUT(r >= 1, "{}.dilation_rates[{}]: must be >= 1, got {}", key, i, r);
    DILATRON_CHECK_INPUT(w >= 1 && n % w == 0, "{}.segment_lengths[{}]: {} must be positive and divide the sequence length {}",
                         key, i, w, n);
    DILATRON_CHECK_INPUT(w % r == 0, "{}.segment_lengths[{}]: {} must be a multiple of {}.dilation_rates[{}] = {}",
                         key, i, w, key, i, r);
  }
  DILATRON_CHECK_INPUT(spec.mode != DilatedMode::head_groups || spec.branches.size() <= static_cast<size_t>(heads),
                       "{}.mode: head_groups needs at most one branch per head, got {} branches and {} heads", key,
                       spec.branches.size(), heads);
}

DilatedSpec dense_as_dilated(int64_t n, bool causal) {
  return DilatedSpec{{DilatedBranch{n, 1}}, DilatedMode::longnet, causal};
}

}  // namespace dilatron
