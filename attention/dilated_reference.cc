#include "attention/dilated_reference.h"

#include <cmath>
#include <limits>

namespace dilatron::testing {
namespace {

// Branch index of every head in head_groups: groups of H / G heads in order, the first
// H mod G groups one head larger.
std::vector<int> head_groups_of(int H, int G) {
  std::vector<int> group;
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < H / G + (g < H % G ? 1 : 0); ++i) group.push_back(g);
  return group;
}

struct Shape {
  int B;
  int64_t n;
  int H, D;
  int64_t at(int b, int64_t t, int h) const { return ((b * n + t) * H + h) * D; }
};

// p (n, n) for one (b, h): p_ij = M_ij exp(s_ij - lse_i), and lse (n).
void probabilities(std::vector<double>& p, std::vector<double>& lse, const int* M, const std::vector<double>& q,
                   const std::vector<double>& k, const Shape& s, int b, int h) {
  const int64_t n = s.n;
  p.assign(static_cast<size_t>(n * n), 0.0);
  lse.assign(static_cast<size_t>(n), -std::numeric_limits<double>::infinity());
  for (int64_t i = 0; i < n; ++i) {
    double max = -std::numeric_limits<double>::infinity();
    std::vector<double> scores(static_cast<size_t>(n), 0.0);
    for (int64_t j = 0; j < n; ++j) {
      if (M[i * n + j] == 0) continue;
      double dot = 0;
      for (int e = 0; e < s.D; ++e) dot += q[s.at(b, i, h) + e] * k[s.at(b, j, h) + e];
      scores[j] = dot / std::sqrt(double(s.D));
      max = std::max(max, scores[j]);
    }
    if (max == -std::numeric_limits<double>::infinity()) continue;
    double sum = 0;
    for (int64_t j = 0; j < n; ++j)
      if (M[i * n + j] != 0) sum += M[i * n + j] * std::exp(scores[j] - max);
    lse[i] = max + std::log(sum);
    for (int64_t j = 0; j < n; ++j)
      if (M[i * n + j] != 0) p[i * n + j] = M[i * n + j] * std::exp(scores[j] - lse[i]);
  }
}

}  // namespace

std::vector<int> dilated_multiplicity(const DilatedSpec& spec, int64_t n, int H) {
  const int G = static_cast<int>(spec.branches.size());
  const std::vector<int> group = head_groups_of(H, G);
  std::vector<int> M(static_cast<size_t>(H * n * n), 0);
  for (int h = 0; h < H; ++h)
    for (int g = 0; g < G; ++g) {
      if (spec.mode == DilatedMode::head_groups && group[h] != g) continue;
      const int64_t w = spec.branches[g].segment_length, r = spec.branches[g].dilation;
      const int64_t offset = (spec.mode == DilatedMode::longnet ? h : g) % r;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) {
          const bool same_segment = i / w == j / w;
          const bool both_on_offset = i % r == offset && j % r == offset;
          const bool visible = !spec.causal || j <= i;
          if (same_segment && both_on_offset && visible) ++M[(h * n + i) * n + j];
        }
    }
  return M;
}

double dilated_output_scale(const DilatedSpec& spec) {
  return spec.mode == DilatedMode::head_groups ? 1.0 / static_cast<double>(spec.branches.size()) : 1.0;
}

void dilated_reference_forward(std::vector<double>& out, std::vector<double>& lse, const std::vector<double>& q,
                               const std::vector<double>& k, const std::vector<double>& v, int B, int64_t n, int H,
                               int D, const DilatedSpec& spec) {
  const Shape s{B, n, H, D};
  const std::vector<int> M = dilated_multiplicity(spec, n, H);
  const double c = dilated_output_scale(spec);
  out.assign(q.size(), 0.0);
  lse.assign(static_cast<size_t>(B * H * n), 0.0);
  std::vector<double> p, row_lse;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      probabilities(p, row_lse, M.data() + h * n * n, q, k, s, b, h);
      for (int64_t i = 0; i < n; ++i) {
        lse[(b * H + h) * n + i] = row_lse[i];
        for (int64_t j = 0; j < n; ++j)
          for (int e = 0; e < D; ++e) out[s.at(b, i, h) + e] += c * p[i * n + j] * v[s.at(b, j, h) + e];
      }
    }
}

void dilated_reference_backward(std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv,
                                const std::vector<double>& dout, const std::vector<double>& q,
                                const std::vector<double>& k, const std::vector<double>& v, int B, int64_t n, int H,
                                int D, const DilatedSpec& spec) {
  const Shape s{B, n, H, D};
  const std::vector<int> M = dilated_multiplicity(spec, n, H);
  const double c = dilated_output_scale(spec);
  const double scale = 1.0 / std::sqrt(double(D));
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  std::vector<double> p, row_lse, dp(static_cast<size_t>(n * n));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      probabilities(p, row_lse, M.data() + h * n * n, q, k, s, b, h);
      // With out_i = c sum_j p_ij v_j: dv_j = c sum_i p_ij dout_i, dp_ij = c dout_i . v_j,
      // ds_ij = p_ij (dp_ij - sum_l p_il dp_il), dq_i = scale sum_j ds_ij k_j, dk_j likewise.
      for (int64_t i = 0; i < n; ++i) {
        double expected_dp = 0;
        for (int64_t j = 0; j < n; ++j) {
          double dot = 0;
          for (int e = 0; e < D; ++e) dot += dout[s.at(b, i, h) + e] * v[s.at(b, j, h) + e];
          dp[i * n + j] = c * dot;
          expected_dp += p[i * n + j] * dp[i * n + j];
        }
        for (int64_t j = 0; j < n; ++j) {
          const double ds = p[i * n + j] * (dp[i * n + j] - expected_dp);
          for (int e = 0; e < D; ++e) {
            dv[s.at(b, j, h) + e] += c * p[i * n + j] * dout[s.at(b, i, h) + e];
            dq[s.at(b, i, h) + e] += scale * ds * k[s.at(b, j, h) + e];
            dk[s.at(b, j, h) + e] += scale * ds * q[s.at(b, i, h) + e];
          }
        }
      }
    }
}

}  // namespace dilatron::testing
