#include "attention/dilated_spec.h"

#include "core/check.h"

namespace dilatron {

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
