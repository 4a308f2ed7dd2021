#include "attention/dense_attention.h"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "attention/grad_check.h"

using namespace dilatron;
using testing::random_normal;

namespace {

// Builds the full (T, T) score matrix per (b, h): the textbook formula, fp64.
void naive_attention(std::vector<double>& out, std::vector<double>& lse,
                     const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, const AttentionDims& d) {
  out.assign(q.size(), 0.0);
  lse.assign(static_cast<size_t>(d.B) * d.H * d.T, 0.0);
  auto at = [&](int b, int t, int h, int e) { return ((b * d.T + t) * d.H + h) * d.D + e; };
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h) {
      std::vector<double> s(static_cast<size_t>(d.T) * d.T, -INFINITY);
      for (int i = 0; i < d.T; ++i)
        for (int j = 0; j < (d.causal ? i + 1 : d.T); ++j) {
          double dot = 0;
          for (int e = 0; e < d.D; ++e) dot += q[at(b, i, h, e)] * k[at(b, j, h, e)];
          s[i * d.T + j] = dot / std::sqrt(double(d.D));
        }
      for (int i = 0; i < d.T; ++i) {
        double sum = 0;
        for (int j = 0; j < d.T; ++j) sum += std::exp(s[i * d.T + j]);
        lse[(b * d.H + h) * d.T + i] = std::log(sum);
        for (int j = 0; j < d.T; ++j)
          for (int e = 0; e < d.D; ++e)
            out[at(b, i, h, e)] += std::exp(s[i * d.T + j]) / sum * v[at(b, j, h, e)];
      }
    }
}

template <typename T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

// Dims that cover one and several query blocks, causal and not.
const AttentionDims kCases[] = {
    {2, 5, 2, 4, true}, {2, 5, 2, 4, false}, {1, 70, 2, 4, true}, {1, 70, 2, 4, false},
    {1, 130, 1, 8, true}};

}  // namespace

TEST_CASE("dense attention forward matches the full-score-matrix reference") {
  for (const AttentionDims& d : kCases) {
    CAPTURE(d.T);
    CAPTURE(d.causal);
    const int64_t n = int64_t(d.B) * d.T * d.H * d.D;
    auto q = random_normal(n, 1), k = random_normal(n, 2), v = random_normal(n, 3);
    std::vector<double> ref_out, ref_lse;
    naive_attention(ref_out, ref_lse, q, k, v, d);

    auto out = testing::nan_filled<double>(n);
    auto lse = testing::nan_filled<double>(ref_lse.size());
    dense_attention_forward<double>(out.data(), lse.data(), q.data(), k.data(), v.data(), d);
    for (size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == doctest::Approx(ref_out[i]).epsilon(1e-12));
    for (size_t i = 0; i < lse.size(); ++i) REQUIRE(lse[i] == doctest::Approx(ref_lse[i]).epsilon(1e-12));

    // fp32: relative error ~1e-5 of the O(1) values (a few ulp times log T of accumulation).
    auto out32 = testing::nan_filled<float>(n);
    auto lse32 = testing::nan_filled<float>(ref_lse.size());
    auto q32 = cast<float>(q), k32 = cast<float>(k), v32 = cast<float>(v);
    dense_attention_forward<float>(out32.data(), lse32.data(), q32.data(), k32.data(), v32.data(), d);
    for (size_t i = 0; i < out.size(); ++i) REQUIRE(std::abs(out32[i] - ref_out[i]) <= 1e-5 * (1 + std::abs(ref_out[i])));
    for (size_t i = 0; i < lse.size(); ++i) REQUIRE(std::abs(lse32[i] - ref_lse[i]) <= 1e-5 * (1 + std::abs(ref_lse[i])));
  }
}

TEST_CASE("dense attention backward matches finite differences and accumulates") {
  for (const AttentionDims& d : kCases) {
    if (d.T > 100) continue;  // finite differences over every element: keep it small
    CAPTURE(d.T);
    CAPTURE(d.causal);
    const int64_t n = int64_t(d.B) * d.T * d.H * d.D;
    auto q = random_normal(n, 11), k = random_normal(n, 12), v = random_normal(n, 13);
    const auto weight = random_normal(n, 14);  // loss = sum(out * weight), so dout = weight
    std::vector<double> out(n), lse(size_t(d.B) * d.H * d.T);
    auto loss = [&] {
      dense_attention_forward<double>(out.data(), lse.data(), q.data(), k.data(), v.data(), d);
      return testing::dot(out, weight);
    };
    loss();
    // Start from non-zero gradients: the backward must add, not overwrite.
    const auto dq0 = random_normal(n, 15), dk0 = random_normal(n, 16), dv0 = random_normal(n, 17);
    auto dq = dq0, dk = dk0, dv = dv0;
    dense_attention_backward<double>(dq.data(), dk.data(), dv.data(), weight.data(), out.data(),
                                     lse.data(), q.data(), k.data(), v.data(), d);
    for (int64_t i = 0; i < n; ++i) {
      dq[i] -= dq0[i];
      dk[i] -= dk0[i];
      dv[i] -= dv0[i];
    }
    testing::check_gradient("dq", q.data(), dq.data(), n, loss);
    testing::check_gradient("dk", k.data(), dk.data(), n, loss);
    testing::check_gradient("dv", v.data(), dv.data(), n, loss);
  }
}

TEST_CASE("causal attention ignores future keys") {
  AttentionDims d{1, 6, 1, 4, true};
  const int64_t n = d.T * d.D;
  auto q = random_normal(n, 21), k = random_normal(n, 22), v = random_normal(n, 23);
  std::vector<double> out(n), out2(n), lse(d.T), lse2(d.T);
  dense_attention_forward<double>(out.data(), lse.data(), q.data(), k.data(), v.data(), d);
  for (int e = 0; e < d.D; ++e) {  // change the last token's key and value
    k[(d.T - 1) * d.D + e] += 1;
    v[(d.T - 1) * d.D + e] += 1;
  }
  dense_attention_forward<double>(out2.data(), lse2.data(), q.data(), k.data(), v.data(), d);
  for (int64_t i = 0; i < (d.T - 1) * d.D; ++i) CHECK(out[i] == out2[i]);
  CHECK(out[n - 1] != out2[n - 1]);
}
