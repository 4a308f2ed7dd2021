// fp64 reference for dilated attention, written straight from the definition in
// docs/attention.md and sharing no code with the implementation: it builds the explicit
// multiplicity matrix M[h, i, j] (how many times query i of head h sees key j across
// branches) and evaluates softmax-with-multiplicities densely. O(H n^2): for tests only.
//
// Layouts: q, k, v, out, dout, dq, dk, dv are (B, n, H, D), contiguous; lse is (B, H, n).
#pragma once

#include <cstdint>
#include <vector>

#include "attention/dilated_spec.h"

namespace dilatron::testing {

// M (H, n, n), row-major; the same for every batch element.
std::vector<int> dilated_multiplicity(const DilatedSpec& spec, int64_t n, int H);

// The factor applied to every head's output: 1/G in head_groups, 1 in longnet.
double dilated_output_scale(const DilatedSpec& spec);

// out = scale * sum_j M_ij exp(s_ij - lse_i) v_j with lse_i = log sum_j M_ij exp(s_ij),
// s_ij = q_i . k_j / sqrt(D). Rows with no key: out = 0, lse = -inf. Resizes out and lse.
void dilated_reference_forward(std::vector<double>& out, std::vector<double>& lse, const std::vector<double>& q,
                               const std::vector<double>& k, const std::vector<double>& v, int B, int64_t n, int H,
                               int D, const DilatedSpec& spec);

// dq, dk, dv := gradients of sum(dout * out) (assigned, not accumulated; resized).
void dilated_reference_backward(std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv,
                                const std::vector<double>& dout, const std::vector<double>& q,
                                const std::vector<double>& k, const std::vector<double>& v, int B, int64_t n, int H,
                                int D, const DilatedSpec& spec);

}  // namespace dilatron::testing
