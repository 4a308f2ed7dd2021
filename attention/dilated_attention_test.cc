#include "attention/dilated_attention.h"

#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "attention/dilated_reference.h"
#include "attention/grad_check.h"
#include "core/check.h"

using namespace dilatron;
using namespace dilatron::testing;

namespace {

struct Case {
  int64_t n;
  int H;
  std::vector<DilatedBranch> branches;
};

// Branch lists covering: w = n with r > 1 on the largest branch; uneven head groups (5 heads,
// 3 or 2 branches); positions no branch covers (n = 16, rates 4 and 8 with 2 heads); and
// segments of more than 64 dilated rows, so that the block primitive tiles its queries.
const Case kCases[] = {
    {16, 5, {{4, 1}, {8, 2}, {16, 4}}},
    {24, 5, {{8, 1}, {24, 3}}},
    {16, 2, {{8, 4}, {16, 8}}},
    {192, 3, {{64, 1}, {96, 2}, {192, 2}}},
};

template <typename T>
std::vector<T> cast(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

// |got - want| <= rtol * (1 + |want|) elementwise; -inf must match exactly; NaN never passes.
template <typename T>
void require_close(const char* what, const std::vector<T>& got, const std::vector<double>& want, double rtol) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CAPTURE(got[i]);
    CAPTURE(want[i]);
    if (std::isinf(want[i])) {
      REQUIRE(static_cast<double>(got[i]) == want[i]);
    } else {
      REQUIRE(std::abs(static_cast<double>(got[i]) - want[i]) <= rtol * (1 + std::abs(want[i])));
    }
  }
}

// Runs forward and backward in precision T on the given inputs and compares every output with
// the fp64 reference. Outputs start as NaN; gradients start random and the start is subtracted.
template <typename T>
void check_against_reference(const Case& c, const DilatedSpec& spec, int B, int D, double rtol) {
  const int64_t size = B * c.n * c.H * D;
  const auto q = random_normal(size, 11), k = random_normal(size, 12), v = random_normal(size, 13);
  const auto dout = random_normal(size, 14);
  std::vector<double> ref_out, ref_lse, ref_dq, ref_dk, ref_dv;
  dilated_reference_forward(ref_out, ref_lse, q, k, v, B, c.n, c.H, D, spec);
  dilated_reference_backward(ref_dq, ref_dk, ref_dv, dout, q, k, v, B, c.n, c.H, D, spec);

  const auto qt = cast<T>(q), kt = cast<T>(k), vt = cast<T>(v), doutt = cast<T>(dout);
  auto out = nan_filled<T>(size);
  auto lse = nan_filled<attention_lse_t<T>>(B * c.H * c.n);
  dilated_attention_forward<T>(out.data(), lse.data(), qt.data(), kt.data(), vt.data(), B, c.n, c.H, D, spec);
  require_close("out", out, ref_out, rtol);
  require_close("lse", lse, ref_lse, rtol);

  const auto dq0 = cast<T>(random_normal(size, 15)), dk0 = cast<T>(random_normal(size, 16));
  const auto dv0 = cast<T>(random_normal(size, 17));
  auto dq = dq0, dk = dk0, dv = dv0;
  dilated_attention_backward<T>(dq.data(), dk.data(), dv.data(), doutt.data(), out.data(), lse.data(), qt.data(),
                                kt.data(), vt.data(), B, c.n, c.H, D, spec);
  for (int64_t i = 0; i < size; ++i) {
    dq[i] -= dq0[i];
    dk[i] -= dk0[i];
    dv[i] -= dv0[i];
  }
  require_close("dq", dq, ref_dq, rtol);
  require_close("dk", dk, ref_dk, rtol);
  require_close("dv", dv, ref_dv, rtol);
}

std::string input_error(const DilatedSpec& spec, int64_t n, int heads) {
  try {
    validate_dilated_spec(spec, n, heads, "model.attention");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("dilated attention matches the fp64 reference in both modes, causal and not") {
  // fp64: the two computations differ only in summation order, ~1e-15 relative; 1e-10 leaves
  // room. fp32: a few ulp (6e-8) times the accumulation length, ~1e-5 relative.
  for (const Case& c : kCases) {
    for (DilatedMode mode : {DilatedMode::longnet, DilatedMode::head_groups}) {
      for (bool causal : {true, false}) {
        CAPTURE(c.n);
        CAPTURE(c.H);
        CAPTURE(static_cast<int>(mode));
        CAPTURE(causal);
        const DilatedSpec spec{c.branches, mode, causal};
        check_against_reference<double>(c, spec, /*B=*/2, /*D=*/4, 1e-10);
        check_against_reference<float>(c, spec, /*B=*/2, /*D=*/4, 1e-5);
      }
    }
  }
}

TEST_CASE("positions no branch covers get out = 0 and lse = -inf") {
  // Rates 4 and 8 with 2 heads: head 0 covers positions = 0 mod 4, head 1 those = 1 mod 4.
  const int B = 1, H = 2, D = 3;
  const int64_t n = 16;
  const DilatedSpec spec{{{8, 4}, {16, 8}}, DilatedMode::longnet, true};
  const auto q = random_normal(B * n * H * D, 1), k = random_normal(B * n * H * D, 2), v = random_normal(B * n * H * D, 3);
  auto out = nan_filled<double>(B * n * H * D), lse = nan_filled<double>(B * H * n);
  dilated_attention_forward<double>(out.data(), lse.data(), q.data(), k.data(), v.data(), B, n, H, D, spec);
  int uncovered = 0;
  for (int h = 0; h < H; ++h)
    for (int64_t p = 0; p < n; ++p) {
      const bool covered = p % 4 == h;
      uncovered += !covered;
      REQUIRE((lse[h * n + p] == -INFINITY) == !covered);
      for (int e = 0; e < D; ++e) {
        REQUIRE(!std::isnan(out[(p * H + h) * D + e]));
        if (!covered) REQUIRE(out[(p * H + h) * D + e] == 0.0);
      }
    }
  REQUIRE(uncovered == 24);
}

TEST_CASE("dilated backward matches finite differences of the dilated forward") {
  const int B = 1, H = 3, D = 3;
  const int64_t n = 8;
  for (DilatedMode mode : {DilatedMode::longnet, DilatedMode::head_groups}) {
    for (bool causal : {true, false}) {
      CAPTURE(static_cast<int>(mode));
      CAPTURE(causal);
      const DilatedSpec spec{{{4, 1}, {8, 2}}, mode, causal};
      const int64_t size = B * n * H * D;
      auto q = random_normal(size, 1), k = random_normal(size, 2), v = random_normal(size, 3);
      const auto dout = random_normal(size, 4);
      std::vector<double> out(size), lse(B * H * n);
      auto loss = [&] {
        dilated_attention_forward<double>(out.data(), lse.data(), q.data(), k.data(), v.data(), B, n, H, D, spec);
        return dot(out, dout);
      };
      loss();
      std::vector<double> dq(size, 0.0), dk(size, 0.0), dv(size, 0.0);
      dilated_attention_backward<double>(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                                         q.data(), k.data(), v.data(), B, n, H, D, spec);
      check_gradient("dq", q.data(), dq.data(), size, loss);
      check_gradient("dk", k.data(), dk.data(), size, loss);
      check_gradient("dv", v.data(), dv.data(), size, loss);
    }
  }
}

TEST_CASE("the dense pattern (n, 1) equals dense attention in fp64 and fp32") {
  const int B = 2, H = 2, D = 8;
  const int n = 70;  // two 64-row query tiles
  const int64_t size = int64_t(B) * n * H * D;
  const auto q = random_normal(size, 1), k = random_normal(size, 2), v = random_normal(size, 3);
  const auto dout = random_normal(size, 4);
  for (bool causal : {true, false}) {
    CAPTURE(causal);
    const AttentionDims dims{B, n, H, D, causal};
    std::vector<double> ref_out(size), ref_lse(B * H * n), ref_dq(size, 0.0), ref_dk(size, 0.0), ref_dv(size, 0.0);
    dense_attention_forward<double>(ref_out.data(), ref_lse.data(), q.data(), k.data(), v.data(), dims);
    dense_attention_backward<double>(ref_dq.data(), ref_dk.data(), ref_dv.data(), dout.data(), ref_out.data(),
                                     ref_lse.data(), q.data(), k.data(), v.data(), dims);
    // The dilated path runs the same BLAS tiles and copies its one partial into the empty
    // output, so only the row-delta summation order separates the two: rounding-level
    // agreement with dense in the same precision, the usual tolerance against fp64.
    const Case c{n, H, {}};
    const DilatedSpec spec = dense_as_dilated(n, causal);
    REQUIRE(spec.branches.size() == 1);
    check_against_reference<double>(c, spec, B, D, 1e-10);  // reference sanity on this size

    auto run = [&]<typename T>(T, double rtol, double rtol_fp64) {
      const auto qt = cast<T>(q), kt = cast<T>(k), vt = cast<T>(v), doutt = cast<T>(dout);
      auto out = nan_filled<T>(size), dense_out = nan_filled<T>(size);
      auto lse = nan_filled<attention_lse_t<T>>(B * H * n), dense_lse = nan_filled<attention_lse_t<T>>(B * H * n);
      DilatedSequenceAttention<T> dilated(spec);
      DenseSequenceAttention<T> dense(causal);
      SequenceAttention<T>& a = dilated;
      SequenceAttention<T>& b = dense;
      a.forward(out.data(), lse.data(), qt.data(), kt.data(), vt.data(), B, n, H, D);
      b.forward(dense_out.data(), dense_lse.data(), qt.data(), kt.data(), vt.data(), B, n, H, D);
      std::vector<T> dq(size, 0), dk(size, 0), dv(size, 0), dense_dq(size, 0), dense_dk(size, 0), dense_dv(size, 0);
      a.backward(dq.data(), dk.data(), dv.data(), doutt.data(), out.data(), lse.data(), qt.data(), kt.data(),
                 vt.data(), B, n, H, D);
      b.backward(dense_dq.data(), dense_dk.data(), dense_dv.data(), doutt.data(), dense_out.data(), dense_lse.data(),
                 qt.data(), kt.data(), vt.data(), B, n, H, D);
      auto widen = [](const auto& x) { return std::vector<double>(x.begin(), x.end()); };
      require_close("out", out, widen(dense_out), rtol);
      require_close("lse", lse, widen(dense_lse), rtol);
      require_close("dq", dq, widen(dense_dq), rtol);
      require_close("dk", dk, widen(dense_dk), rtol);
      require_close("dv", dv, widen(dense_dv), rtol);
      // And both against fp64 dense.
      require_close("out vs fp64", out, ref_out, rtol_fp64);
      require_close("dq vs fp64", dq, ref_dq, rtol_fp64);
    };
    run(double{}, 1e-12, 1e-12);
    run(float{}, 1e-6, 1e-5);
  }
}

TEST_CASE("validate_dilated_spec names the offending key") {
  auto spec = [](std::vector<DilatedBranch> b, DilatedMode mode = DilatedMode::longnet) {
    return DilatedSpec{std::move(b), mode, true};
  };
  CHECK(input_error(spec({{8, 1}, {16, 2}}), 16, 4) == "");
  CHECK(input_error(spec({}), 16, 4) == "model.attention.segment_lengths: needs at least one branch");
  CHECK(input_error(spec({{8, 1}, {12, 2}}), 16, 4) ==
        "model.attention.segment_lengths[1]: 12 must be positive and divide the sequence length 16");
  CHECK(input_error(spec({{0, 1}}), 16, 4) ==
        "model.attention.segment_lengths[0]: 0 must be positive and divide the sequence length 16");
  CHECK(input_error(spec({{8, 0}}), 16, 4) == "model.attention.dilation_rates[0]: must be >= 1, got 0");
  CHECK(input_error(spec({{8, 3}}), 24, 4) ==
        "model.attention.segment_lengths[0]: 8 must be a multiple of model.attention.dilation_rates[0] = 3");
  CHECK(input_error(spec({{4, 1}, {8, 2}, {16, 4}}, DilatedMode::head_groups), 16, 2) ==
        "model.attention.mode: head_groups needs at most one branch per head, got 3 branches and 2 heads");
  CHECK(input_error(spec({{4, 1}, {8, 2}, {16, 4}}, DilatedMode::head_groups), 16, 3) == "");
  // The forward validates with the key "attention".
  std::vector<double> x(16 * 2, 0.0), lse(16);
  CHECK_THROWS_AS(dilated_attention_forward<double>(x.data(), lse.data(), x.data(), x.data(), x.data(), 1, 16, 1, 2,
                                                    spec({{5, 1}})),
                  InputError);
}
