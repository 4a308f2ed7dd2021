// What a dilated attention computes (docs/attention.md gives the full semantics):
// a list of branches (segment length w_i, dilation rate r_i), a mode and causality.
#pragma once

#include <cstdint>
#include <vector>

namespace dilatron {

enum class DilatedMode {
  // LongNet: every head in every branch; head h uses offset h mod r_i; one softmax over the
  // multiset union of the keys a query sees across branches.
  longnet,
  // dilated-attention-pytorch: heads split into one group per branch (the first H mod G groups
  // get one extra head), group i uses offset i mod r_i, uncovered positions output 0, result / G.
  head_groups,
};

struct DilatedBranch {
  int64_t segment_length;
  int64_t dilation;
};

struct DilatedSpec {
  std::vector<DilatedBranch> branches;
  DilatedMode mode = DilatedMode::longnet;
  bool causal = true;
};

// Throws InputError unless every segment length divides n and is a multiple of its dilation
// rate, rates are >= 1, and head_groups has no more branches than heads. `key` prefixes the
// messages (e.g. "attention").
void validate_dilated_spec(const DilatedSpec& spec, int64_t n, int heads, const char* key = "attention");

// The heads that take part in a branch: all H in longnet; in head_groups the branch's own group,
// groups of H / G heads in order with the first H mod G groups one head larger.
struct HeadRange {
  int begin, end;
  int count() const { return end - begin; }
  bool contains(int h) const { return begin <= h && h < end; }
};
HeadRange branch_heads(const DilatedSpec& spec, int branch, int H);

// The residue (position mod r) of the queries and keys head h sees in a branch: h mod r in
// longnet, branch mod r in head_groups.
int64_t head_offset(const DilatedSpec& spec, int branch, int h);

// Dense attention as a dilated pattern: one branch (n, 1).
DilatedSpec dense_as_dilated(int64_t n, bool causal);

}  // namespace dilatron
