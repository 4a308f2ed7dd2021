#include "attention/dilated_reference.h"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "attention/dense_attention.h"
#include "attention/grad_check.h"

using namespace dilatron;
using namespace dilatron::testing;

namespace {

// The worked example of docs/attention.md: n = 8, branches (4, 1), (8, 2), 2 heads.
const DilatedSpec kExample{{{4, 1}, {8, 2}}, DilatedMode::longnet, /*causal=*/false};

// Worked by hand. longnet head 0: the (4, 1) block diagonal plus (8, 2) with offset 0 (even
// query sees even keys); head 1: the block diagonal plus the odd-odd pattern.
const int kLongnetM[2][8][8] = {
    {{2, 1, 2, 1, 1, 0, 1, 0},
     {1, 1, 1, 1, 0, 0, 0, 0},
     {2, 1, 2, 1, 1, 0, 1, 0},
     {1, 1, 1, 1, 0, 0, 0, 0},
     {1, 0, 1, 0, 2, 1, 2, 1},
     {0, 0, 0, 0, 1, 1, 1, 1},
     {1, 0, 1, 0, 2, 1, 2, 1},
     {0, 0, 0, 0, 1, 1, 1, 1}},
    {{1, 1, 1, 1, 0, 0, 0, 0},
     {1, 2, 1, 2, 0, 1, 0, 1},
     {1, 1, 1, 1, 0, 0, 0, 0},
     {1, 2, 1, 2, 0, 1, 0, 1},
     {0, 0, 0, 0, 1, 1, 1, 1},
     {0, 1, 0, 1, 1, 2, 1, 2},
     {0, 0, 0, 0, 1, 1, 1, 1},
     {0, 1, 0, 1, 1, 2, 1, 2}},
};
// head_groups: head 0 is group 0 = branch (4, 1) offset 0; head 1 is group 1 = branch (8, 2)
// with offset 1 mod 2 = 1, so only odd queries, seeing odd keys.
const int kHeadGroupsM[2][8][8] = {
    {{1, 1, 1, 1, 0, 0, 0, 0},
     {1, 1, 1, 1, 0, 0, 0, 0},
     {1, 1, 1, 1, 0, 0, 0, 0},
     {1, 1, 1, 1, 0, 0, 0, 0},
     {0, 0, 0, 0, 1, 1, 1, 1},
     {0, 0, 0, 0, 1, 1, 1, 1},
     {0, 0, 0, 0, 1, 1, 1, 1},
     {0, 0, 0, 0, 1, 1, 1, 1}},
    {{0, 0, 0, 0, 0, 0, 0, 0},
     {0, 1, 0, 1, 0, 1, 0, 1},
     {0, 0, 0, 0, 0, 0, 0, 0},
     {0, 1, 0, 1, 0, 1, 0, 1},
     {0, 0, 0, 0, 0, 0, 0, 0},
     {0, 1, 0, 1, 0, 1, 0, 1},
     {0, 0, 0, 0, 0, 0, 0, 0},
     {0, 1, 0, 1, 0, 1, 0, 1}},
};

// Causal keeps the keys j <= i of the same pattern.
void check_multiplicity(const DilatedSpec& spec, const int (&want)[2][8][8]) {
  const std::vector<int> M = dilated_multiplicity(spec, 8, 2);
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 8; ++j) {
        CAPTURE(h);
        CAPTURE(i);
        CAPTURE(j);
        REQUIRE(M[(h * 8 + i) * 8 + j] == (spec.causal && j > i ? 0 : want[h][i][j]));
      }
}

}  // namespace

TEST_CASE("reference multiplicities of the worked example match the hand-worked matrices") {
  for (bool causal : {false, true}) {
    DilatedSpec spec = kExample;
    spec.causal = causal;
    check_multiplicity(spec, kLongnetM);
    spec.mode = DilatedMode::head_groups;
    check_multiplicity(spec, kHeadGroupsM);
  }
}

TEST_CASE("reference with zero queries averages the values with the multiplicities as weights") {
  // q = 0 makes every score 0: out_i = scale * sum_j M_ij v_j / sum_j M_ij, lse_i = log sum_j M_ij.
  const int B = 1, H = 2, D = 3;
  const int64_t n = 8;
  for (DilatedMode mode : {DilatedMode::longnet, DilatedMode::head_groups}) {
    DilatedSpec spec = kExample;
    spec.mode = mode;
    const auto& M = mode == DilatedMode::longnet ? kLongnetM : kHeadGroupsM;
    const double scale = mode == DilatedMode::longnet ? 1.0 : 0.5;
    std::vector<double> q(n * H * D, 0.0), k = random_normal(n * H * D, 1), v = random_normal(n * H * D, 2);
    std::vector<double> out, lse;
    dilated_reference_forward(out, lse, q, k, v, B, n, H, D, spec);
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < n; ++i) {
        int total = 0;
        for (int j = 0; j < n; ++j) total += M[h][i][j];
        if (total == 0) {
          REQUIRE(lse[h * n + i] == -INFINITY);
        } else {
          REQUIRE(lse[h * n + i] == doctest::Approx(std::log(total)).epsilon(1e-14));
        }
        for (int e = 0; e < D; ++e) {
          double want = 0;
          for (int j = 0; j < n; ++j) want += total == 0 ? 0.0 : scale * M[h][i][j] * v[(j * H + h) * D + e] / total;
          REQUIRE(out[(i * H + h) * D + e] == doctest::Approx(want).epsilon(1e-14));
        }
      }
  }
}

TEST_CASE("reference with the one branch (n, 1) equals dense attention") {
  const int B = 2, H = 3, D = 4;
  const int64_t n = 12;
  for (bool causal : {false, true}) {
    CAPTURE(causal);
    const DilatedSpec spec{{{n, 1}}, DilatedMode::longnet, causal};
    const int64_t size = B * n * H * D;
    auto q = random_normal(size, 1), k = random_normal(size, 2), v = random_normal(size, 3), dout = random_normal(size, 4);
    std::vector<double> out, lse, dq, dk, dv;
    dilated_reference_forward(out, lse, q, k, v, B, n, H, D, spec);
    dilated_reference_backward(dq, dk, dv, dout, q, k, v, B, n, H, D, spec);

    const AttentionDims dims{B, static_cast<int>(n), H, D, causal};
    auto dense_out = testing::nan_filled<double>(size), dense_lse = testing::nan_filled<double>(B * H * n);
    std::vector<double> dense_dq(size, 0.0), dense_dk(size, 0.0), dense_dv(size, 0.0);
    dense_attention_forward<double>(dense_out.data(), dense_lse.data(), q.data(), k.data(), v.data(), dims);
    dense_attention_backward<double>(dense_dq.data(), dense_dk.data(), dense_dv.data(), dout.data(),
                                     dense_out.data(), dense_lse.data(), q.data(), k.data(), v.data(), dims);
    for (int64_t i = 0; i < size; ++i) {
      REQUIRE(out[i] == doctest::Approx(dense_out[i]).epsilon(1e-12));
      REQUIRE(dq[i] == doctest::Approx(dense_dq[i]).epsilon(1e-12));
      REQUIRE(dk[i] == doctest::Approx(dense_dk[i]).epsilon(1e-12));
      REQUIRE(dv[i] == doctest::Approx(dense_dv[i]).epsilon(1e-12));
    }
    for (int64_t i = 0; i < B * H * n; ++i) REQUIRE(lse[i] == doctest::Approx(dense_lse[i]).epsilon(1e-12));
  }
}

TEST_CASE("reference backward matches finite differences of the reference forward") {
  const int B = 1, H = 2, D = 3;
  const int64_t n = 8;
  for (DilatedMode mode : {DilatedMode::longnet, DilatedMode::head_groups})
    for (bool causal : {false, true}) {
      DilatedSpec spec = kExample;
      spec.mode = mode;
      spec.causal = causal;
      const int64_t size = B * n * H * D;
      auto q = random_normal(size, 1), k = random_normal(size, 2), v = random_normal(size, 3), dout = random_normal(size, 4);
      std::vector<double> dq, dk, dv;
      dilated_reference_backward(dq, dk, dv, dout, q, k, v, B, n, H, D, spec);
      auto loss = [&] {
        std::vector<double> out, lse;
        dilated_reference_forward(out, lse, q, k, v, B, n, H, D, spec);
        return testing::dot(out, dout);
      };
      testing::check_gradient("dq", q.data(), dq.data(), size, loss);
      testing::check_gradient("dk", k.data(), dk.data(), size, loss);
      testing::check_gradient("dv", v.data(), dv.data(), size, loss);
    }
}
