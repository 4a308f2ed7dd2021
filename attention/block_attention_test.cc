#include "attention/block_attention.h"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "attention/grad_check.h"

using namespace dilatron;
using testing::random_normal;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Rows packed with a stride wider than D; the padding holds NaN so that any read of it shows.
struct Strided {
  int64_t rows, stride;
  int D;
  std::vector<double> data;
  Strided(int64_t rows_, int64_t stride_, int D_, uint64_t seed)
      : rows(rows_), stride(stride_), D(D_), data(testing::nan_filled<double>(rows_ * stride_)) {
    const auto values = random_normal(rows * D, seed);
    for (int64_t i = 0; i < rows; ++i)
      for (int d = 0; d < D; ++d) at(i, d) = values[i * D + d];
  }
  double& at(int64_t i, int d) { return data[i * stride + d]; }
  double at(int64_t i, int d) const { return data[i * stride + d]; }
  RowBlock<const double> block() const { return {data.data(), stride}; }
  RowBlock<double> block() { return {data.data(), stride}; }
};

// The textbook formula with explicit loops: out (nq, D) packed, lse (nq).
void naive_block(std::vector<double>& out, std::vector<double>& lse, const Strided& q, const Strided& k,
                 const Strided& v, int64_t nq, int64_t nk, int D, double scale, BlockMask mask) {
  out.assign(static_cast<size_t>(nq * D), 0.0);
  lse.assign(static_cast<size_t>(nq), -kInf);
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t seen = mask == BlockMask::causal ? i + 1 : nk;
    if (seen == 0) continue;
    std::vector<double> s(static_cast<size_t>(seen));
    double sum = 0;
    for (int64_t j = 0; j < seen; ++j) {
      for (int d = 0; d < D; ++d) s[j] += q.at(i, d) * k.at(j, d);
      s[j] *= scale;
      sum += std::exp(s[j]);
    }
    lse[i] = std::log(sum);
    for (int64_t j = 0; j < seen; ++j)
      for (int d = 0; d < D; ++d) out[i * D + d] += std::exp(s[j]) / sum * v.at(j, d);
  }
}

void require_close(const std::vector<double>& got, const std::vector<double>& want, double rtol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    REQUIRE(!std::isnan(got[i]));
    if (std::isinf(want[i])) {
      REQUIRE(got[i] == want[i]);
    } else {
      REQUIRE(std::abs(got[i] - want[i]) <= rtol * (1 + std::abs(want[i])));
    }
  }
}

}  // namespace

TEST_CASE("block forward matches the naive formula for both masks and strided rows") {
  // nq = 70 spans two 64-row query tiles; strides 3D, 2D+1 and D exercise in-place reads.
  for (BlockMask mask : {BlockMask::none, BlockMask::causal}) {
    for (int64_t nk : {70, 5}) {
      const int64_t nq = mask == BlockMask::causal ? nk : 70;
      const int D = 4;
      CAPTURE(nk);
      CAPTURE(static_cast<int>(mask));
      const Strided q(nq, 3 * D, D, 1), k(nk, 2 * D + 1, D, 2), v(nk, D, D, 3);
      std::vector<double> want_out, want_lse;
      naive_block(want_out, want_lse, q, k, v, nq, nk, D, 0.4, mask);

      Strided out(nq, 2 * D, D, 4);
      std::vector<double> lse = testing::nan_filled<double>(2 * nq);  // every other entry
      for (int64_t i = 0; i < nq; ++i)
        for (int d = 0; d < D; ++d) out.at(i, d) = NAN;
      block_attention_forward<double>(out.block(), lse.data(), 2, q.block(), k.block(), v.block(), nq, nk, D, 0.4,
                                      mask);
      std::vector<double> got_out, got_lse;
      for (int64_t i = 0; i < nq; ++i) {
        got_lse.push_back(lse[2 * i]);
        for (int d = 0; d < D; ++d) got_out.push_back(out.at(i, d));
        REQUIRE(std::isnan(out.at(i, D)));  // the padding after each row is untouched
        REQUIRE(std::isnan(lse[2 * i + 1]));
      }
      require_close(got_out, want_out, 1e-12);
      require_close(got_lse, want_lse, 1e-12);
    }
  }
}

TEST_CASE("rows that see no key get out = 0 and lse = -inf, without NaN") {
  const int D = 3;
  const Strided q(4, D, D, 1), k(1, D, D, 2), v(1, D, D, 3);
  auto out = testing::nan_filled<double>(4 * D);
  auto lse = testing::nan_filled<double>(4);
  block_attention_forward<double>({out.data(), D}, lse.data(), 1, q.block(), k.block(), v.block(), 4, 0, D, 1.0,
                                  BlockMask::none);
  for (double x : out) REQUIRE(x == 0.0);
  for (double x : lse) REQUIRE(x == -kInf);

  // The backward of an empty block adds nothing.
  auto dq = random_normal(4 * D, 5);
  const auto dq_before = dq;
  std::vector<double> dk(D, 0.0), dv(D, 0.0), delta(4, 0.0), dout = random_normal(4 * D, 6);
  block_attention_backward<double>({dq.data(), D}, {dk.data(), D}, {dv.data(), D}, {dout.data(), D}, delta.data(),
                                   lse.data(), 1, q.block(), k.block(), v.block(), 4, 0, D, 1.0, BlockMask::none);
  REQUIRE(dq == dq_before);
}

TEST_CASE("a row that sees a single key copies its value, lse = its score") {
  const int D = 3;
  const Strided q(1, D, D, 1), k(1, D, D, 2), v(1, D, D, 3);
  std::vector<double> out = testing::nan_filled<double>(D), lse = testing::nan_filled<double>(1);
  block_attention_forward<double>({out.data(), D}, lse.data(), 1, q.block(), k.block(), v.block(), 1, 1, D, 0.5,
                                  BlockMask::causal);
  double s = 0;
  for (int d = 0; d < D; ++d) s += 0.5 * q.at(0, d) * k.at(0, d);
  REQUIRE(lse[0] == doctest::Approx(s).epsilon(1e-14));
  for (int d = 0; d < D; ++d) REQUIRE(out[d] == doctest::Approx(v.at(0, d)).epsilon(1e-14));
}

TEST_CASE("merging the partials of two halves of the keys equals attention over all keys") {
  const int D = 5;
  const int64_t nq = 9, nk = 12, half = 5;
  for (int64_t split : {half, int64_t{0}, nk}) {  // 0 and nk: one partial is empty (-inf)
    CAPTURE(split);
    const Strided q(nq, D, D, 1), k(nk, D, D, 2), v(nk, D, D, 3);
    std::vector<double> whole_out(nq * D), whole_lse(nq);
    block_attention_forward<double>({whole_out.data(), D}, whole_lse.data(), 1, q.block(), k.block(), v.block(), nq,
                                    nk, D, 0.3, BlockMask::none);
    auto a_out = testing::nan_filled<double>(nq * D), a_lse = testing::nan_filled<double>(nq);
    auto b_out = testing::nan_filled<double>(nq * D), b_lse = testing::nan_filled<double>(nq);
    block_attention_forward<double>({a_out.data(), D}, a_lse.data(), 1, q.block(), k.block(), v.block(), nq, split,
                                    D, 0.3, BlockMask::none);
    const RowBlock<const double> k_rest{k.data.data() + split * D, D}, v_rest{v.data.data() + split * D, D};
    block_attention_forward<double>({b_out.data(), D}, b_lse.data(), 1, q.block(), k_rest, v_rest, nq, nk - split,
                                    D, 0.3, BlockMask::none);
    merge_attention_partial<double>({a_out.data(), D}, a_lse.data(), 1, {b_out.data(), D}, b_lse.data(), 1, nq, D);
    require_close(a_out, whole_out, 1e-13);
    require_close(a_lse, whole_lse, 1e-13);
  }
}

TEST_CASE("merging two empty partials keeps out = 0 and lse = -inf") {
  std::vector<double> a_out(6, 0.0), b_out(6, 0.0), a_lse(2, -kInf), b_lse(2, -kInf);
  merge_attention_partial<double>({a_out.data(), 3}, a_lse.data(), 1, {b_out.data(), 3}, b_lse.data(), 1, 2, 3);
  for (double x : a_out) REQUIRE(x == 0.0);
  for (double x : a_lse) REQUIRE(x == -kInf);
}

TEST_CASE("block backward over two merged key blocks matches finite differences of the merged output") {
  // The final lse and delta make the per-block backwards sum to the exact gradient of the
  // merged attention, merge weights included. Key block 1 is causal-aligned with q, block 2 not.
  const int D = 3;
  const int64_t nq = 6, nk2 = 4;
  for (BlockMask mask : {BlockMask::none, BlockMask::causal}) {
    CAPTURE(static_cast<int>(mask));
    auto q = random_normal(nq * D, 1), k1 = random_normal(nq * D, 2), v1 = random_normal(nq * D, 3);
    auto k2 = random_normal(nk2 * D, 4), v2 = random_normal(nk2 * D, 5), dout = random_normal(nq * D, 6);
    const double scale = 0.7;
    std::vector<double> out(nq * D), lse(nq), out2(nq * D), lse2(nq);
    auto forward = [&] {
      block_attention_forward<double>({out.data(), D}, lse.data(), 1, {q.data(), D}, {k1.data(), D}, {v1.data(), D},
                                      nq, nq, D, scale, mask);
      block_attention_forward<double>({out2.data(), D}, lse2.data(), 1, {q.data(), D}, {k2.data(), D},
                                      {v2.data(), D}, nq, nk2, D, scale, BlockMask::none);
      merge_attention_partial<double>({out.data(), D}, lse.data(), 1, {out2.data(), D}, lse2.data(), 1, nq, D);
      return testing::dot(out, dout);
    };
    forward();
    std::vector<double> delta(nq);
    attention_row_delta<double>(delta.data(), {dout.data(), D}, {out.data(), D}, nq, D);
    std::vector<double> dq(nq * D, 0.0), dk1(nq * D, 0.0), dv1(nq * D, 0.0), dk2(nk2 * D, 0.0), dv2(nk2 * D, 0.0);
    block_attention_backward<double>({dq.data(), D}, {dk1.data(), D}, {dv1.data(), D}, {dout.data(), D},
                                     delta.data(), lse.data(), 1, {q.data(), D}, {k1.data(), D}, {v1.data(), D}, nq,
                                     nq, D, scale, mask);
    block_attention_backward<double>({dq.data(), D}, {dk2.data(), D}, {dv2.data(), D}, {dout.data(), D},
                                     delta.data(), lse.data(), 1, {q.data(), D}, {k2.data(), D}, {v2.data(), D}, nq,
                                     nk2, D, scale, BlockMask::none);
    testing::check_gradient("dq", q.data(), dq.data(), nq * D, forward);
    testing::check_gradient("dk1", k1.data(), dk1.data(), nq * D, forward);
    testing::check_gradient("dv1", v1.data(), dv1.data(), nq * D, forward);
    testing::check_gradient("dk2", k2.data(), dk2.data(), nk2 * D, forward);
    testing::check_gradient("dv2", v2.data(), dv2.data(), nk2 * D, forward);
  }
}

TEST_CASE("block backward accumulates into strided gradients and leaves the padding alone") {
  const int D = 4;
  const int64_t n = 70;
  const Strided q(n, 2 * D, D, 1), k(n, 2 * D, D, 2), v(n, 2 * D, D, 3), dout(n, 2 * D, D, 4);
  std::vector<double> out(n * D), lse(n), delta(n);
  block_attention_forward<double>({out.data(), D}, lse.data(), 1, q.block(), k.block(), v.block(), n, n, D, 0.5,
                                  BlockMask::causal);
  attention_row_delta<double>(delta.data(), dout.block(), {out.data(), D}, n, D);
  // Packed gradients from a zero start, then strided ones from a random start: same increments.
  std::vector<double> dq(n * D, 0.0), dk(n * D, 0.0), dv(n * D, 0.0);
  block_attention_backward<double>({dq.data(), D}, {dk.data(), D}, {dv.data(), D}, dout.block(), delta.data(),
                                   lse.data(), 1, q.block(), k.block(), v.block(), n, n, D, 0.5, BlockMask::causal);
  Strided sdq(n, 2 * D, D, 5), sdk(n, 2 * D, D, 6), sdv(n, 2 * D, D, 7);
  const Strided start_q = sdq, start_k = sdk, start_v = sdv;
  block_attention_backward<double>(sdq.block(), sdk.block(), sdv.block(), dout.block(), delta.data(), lse.data(), 1,
                                   q.block(), k.block(), v.block(), n, n, D, 0.5, BlockMask::causal);
  for (int64_t i = 0; i < n; ++i) {
    for (int d = 0; d < D; ++d) {
      REQUIRE(sdq.at(i, d) - start_q.at(i, d) == doctest::Approx(dq[i * D + d]).epsilon(1e-10));
      REQUIRE(sdk.at(i, d) - start_k.at(i, d) == doctest::Approx(dk[i * D + d]).epsilon(1e-10));
      REQUIRE(sdv.at(i, d) - start_v.at(i, d) == doctest::Approx(dv[i * D + d]).epsilon(1e-10));
    }
    REQUIRE(std::isnan(sdq.at(i, D)));
  }
}
