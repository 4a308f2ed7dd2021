// Each layer's backward against fp64 central differences (tolerance rule in
// attention/grad_check.h), its forward against a direct formula, and the "+=" rule by
// starting every gradient buffer from random values.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "attention/grad_check.h"
#include "core/check.h"
#include "model/cross_entropy.h"
#include "model/embedding.h"
#include "model/gelu.h"
#include "model/layernorm.h"
#include "model/matmul.h"
#include "model/residual.h"
#include "model/rmsnorm.h"
#include "model/rotary.h"

using namespace dilatron;
using testing::check_gradient;
using testing::dot;
using testing::random_normal;
using Vec = std::vector<double>;

namespace {

// A gradient buffer pre-filled with random values; added() returns what backward added.
struct AccumulatedGrad {
  Vec start, value;
  AccumulatedGrad(int64_t n, uint64_t seed) : start(random_normal(n, seed)), value(start) {}
  double* data() { return value.data(); }
  Vec added() const {
    Vec d(value.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = value[i] - start[i];
    return d;
  }
};

}  // namespace

TEST_CASE("matmul forward and backward, with and without bias") {
  const int N = 5, IC = 4, OC = 3;
  for (bool with_bias : {true, false}) {
    CAPTURE(with_bias);
    Vec x = random_normal(N * IC, 1), w = random_normal(OC * IC, 2), b = random_normal(OC, 3);
    const Vec weight = random_normal(N * OC, 4);
    Vec out = testing::nan_filled<double>(N * OC);
    const double* bias = with_bias ? b.data() : nullptr;
    auto loss = [&] {
      matmul_forward(out.data(), x.data(), w.data(), bias, N, IC, OC);
      return dot(out, weight);
    };
    loss();
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o) {
        double ref = with_bias ? b[o] : 0.0;
        for (int i = 0; i < IC; ++i) ref += x[n * IC + i] * w[o * IC + i];
        CHECK(out[n * OC + o] == doctest::Approx(ref).epsilon(1e-14));
      }
    AccumulatedGrad dx(N * IC, 5), dw(OC * IC, 6), db(OC, 7);
    matmul_backward(dx.data(), dw.data(), with_bias ? db.data() : nullptr, weight.data(), x.data(),
                    w.data(), N, IC, OC);
    check_gradient("dinp", x.data(), dx.added().data(), N * IC, loss);
    check_gradient("dweight", w.data(), dw.added().data(), OC * IC, loss);
    if (with_bias) check_gradient("dbias", b.data(), db.added().data(), OC, loss);
    if (!with_bias) CHECK(db.added() == Vec(OC, 0.0));
  }
}

TEST_CASE("layernorm forward and backward") {
  const int N = 4, C = 6;
  Vec x = random_normal(N * C, 11), w = random_normal(C, 12), b = random_normal(C, 13);
  const Vec weight = random_normal(N * C, 14);
  Vec out = testing::nan_filled<double>(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return dot(out, weight);
  };
  loss();
  for (int n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += x[n * C + c] / C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m) / C;
    for (int c = 0; c < C; ++c) {
      const double ref = (x[n * C + c] - m) / std::sqrt(v + 1e-5) * w[c] + b[c];
      CHECK(out[n * C + c] == doctest::Approx(ref).epsilon(1e-12));
    }
  }
  AccumulatedGrad dx(N * C, 15), dw(C, 16), db(C, 17);
  layernorm_backward(dx.data(), dw.data(), db.data(), weight.data(), x.data(), w.data(),
                     mean.data(), rstd.data(), N, C);
  check_gradient("dinp", x.data(), dx.added().data(), N * C, loss);
  check_gradient("dweight", w.data(), dw.added().data(), C, loss);
  check_gradient("dbias", b.data(), db.added().data(), C, loss);
}

TEST_CASE("rmsnorm forward and backward") {
  const int N = 4, C = 6;
  Vec x = random_normal(N * C, 21), w = random_normal(C, 22);
  const Vec weight = random_normal(N * C, 23);
  Vec out = testing::nan_filled<double>(N * C), rstd(N);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C);
    return dot(out, weight);
  };
  loss();
  for (int n = 0; n < N; ++n) {
    double ms = 0;
    for (int c = 0; c < C; ++c) ms += x[n * C + c] * x[n * C + c] / C;
    for (int c = 0; c < C; ++c)
      CHECK(out[n * C + c] == doctest::Approx(x[n * C + c] / std::sqrt(ms + 1e-5) * w[c]).epsilon(1e-12));
  }
  AccumulatedGrad dx(N * C, 24), dw(C, 25);
  rmsnorm_backward(dx.data(), dw.data(), weight.data(), x.data(), w.data(), rstd.data(), N, C);
  check_gradient("dinp", x.data(), dx.added().data(), N * C, loss);
  check_gradient("dweight", w.data(), dw.added().data(), C, loss);
}

TEST_CASE("gelu approximates x * Phi(x) and its backward matches finite differences") {
  const int n = 40;
  Vec x = random_normal(n, 31, 2.0);
  const Vec weight = random_normal(n, 32);
  Vec out = testing::nan_filled<double>(n);
  auto loss = [&] {
    gelu_forward(out.data(), x.data(), n);
    return dot(out, weight);
  };
  loss();
  // The tanh form is within 1e-3 of the exact erf form everywhere (Hendrycks & Gimpel).
  for (int i = 0; i < n; ++i)
    CHECK(std::abs(out[i] - x[i] * 0.5 * (1 + std::erf(x[i] / std::sqrt(2.0)))) < 1e-3);
  AccumulatedGrad dx(n, 33);
  gelu_backward(dx.data(), x.data(), weight.data(), n);
  check_gradient("dinp", x.data(), dx.added().data(), n, loss);
}

TEST_CASE("rotary embedding: relative positions, norm preservation, backward with pos0") {
  const int B = 2, T = 5, H = 2, D = 6, pos0 = 7;
  const double theta = 100;  // small theta: all pairs rotate noticeably over a few positions
  const int64_t n = int64_t(B) * T * H * D;

  // q_i . k_j after rotation depends only on i - j: shifting pos0 changes nothing.
  const Vec q = random_normal(n, 41), k = random_normal(n, 42);
  auto dots_at = [&](int start) {
    Vec rq = q, rk = k;
    rotary_forward(rq.data(), B, T, H, D, start, theta);
    rotary_forward(rk.data(), B, T, H, D, start, theta);
    Vec dots;
    for (int i = 0; i < T; ++i)
      for (int j = 0; j < T; ++j) {
        double s = 0;
        for (int e = 0; e < D; ++e) s += rq[(i * H) * D + e] * rk[(j * H) * D + e];
        dots.push_back(s);
      }
    return dots;
  };
  const Vec at0 = dots_at(0), at_shift = dots_at(pos0);
  for (size_t i = 0; i < at0.size(); ++i) CHECK(at_shift[i] == doctest::Approx(at0[i]).epsilon(1e-12));

  // Pair (2i, 2i+1) of the token at position p turns by p * theta^(-2i/D).
  Vec r = q;
  rotary_forward(r.data(), B, T, H, D, pos0, theta);
  const int t = 3, h = 1, i = 2;
  const int64_t at = ((1 * T + t) * H + h) * D + 2 * i;
  const double angle = (pos0 + t) * std::pow(theta, -2.0 * i / D);
  CHECK(r[at] == doctest::Approx(q[at] * std::cos(angle) - q[at + 1] * std::sin(angle)).epsilon(1e-13));
  CHECK(r[at + 1] == doctest::Approx(q[at] * std::sin(angle) + q[at + 1] * std::cos(angle)).epsilon(1e-13));

  Vec x = random_normal(n, 43);
  const Vec weight = random_normal(n, 44);
  Vec out(n);
  auto loss = [&] {
    out = x;
    rotary_forward(out.data(), B, T, H, D, pos0, theta);
    return dot(out, weight);
  };
  Vec dx = weight;  // in place: the gradient of the output becomes that of the input
  rotary_backward(dx.data(), B, T, H, D, pos0, theta);
  check_gradient("dinp", x.data(), dx.data(), n, loss);
}

TEST_CASE("cross-entropy: loss, ignored targets, backward") {
  const int N = 4, V = 7;
  Vec logits = random_normal(N * V, 51, 2.0);
  const std::vector<int32_t> targets = {3, -1, 0, 6};
  const double w = 0.37;
  Vec losses = testing::nan_filled<double>(N), lse = testing::nan_filled<double>(N);
  auto loss = [&] {
    cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), N, V);
    return w * (losses[0] + losses[1] + losses[2] + losses[3]);
  };
  loss();
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      CHECK(losses[n] == 0.0);
      continue;
    }
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(logits[n * V + v]);
    CHECK(losses[n] == doctest::Approx(-std::log(std::exp(logits[n * V + targets[n]]) / z)).epsilon(1e-13));
  }
  Vec dlogits = testing::nan_filled<double>(N * V);
  cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), w, N, V);
  for (int v = 0; v < V; ++v) CHECK(dlogits[1 * V + v] == 0.0);
  check_gradient("dlogits", logits.data(), dlogits.data(), N * V, loss);

  // In place (dlogits aliasing logits) gives the same values.
  loss();  // lse of the unperturbed logits again
  Vec in_place = logits;
  cross_entropy_backward(in_place.data(), in_place.data(), lse.data(), targets.data(), w, N, V);
  CHECK(in_place == dlogits);

  const std::vector<int32_t> too_large = {3, 7, 0, 6};
  CHECK_THROWS_AS(cross_entropy_forward(losses.data(), lse.data(), logits.data(), too_large.data(), N, V),
                  InputError);
}

TEST_CASE("token and position embeddings") {
  const int B = 2, T = 3, C = 4, V = 5, T_max = 8, pos0 = 4;
  const std::vector<int32_t> tokens = {1, 4, 1, 0, 2, 4};  // repeated tokens accumulate
  Vec wte = random_normal(V * C, 61), wpe = random_normal(T_max * C, 62);
  const Vec weight = random_normal(B * T * C, 63);
  Vec x = testing::nan_filled<double>(B * T * C);
  auto loss = [&] {
    token_embedding_forward(x.data(), tokens.data(), wte.data(), B * T, C, V);
    position_embedding_forward(x.data(), wpe.data(), B, T, C, pos0);
    return dot(x, weight);
  };
  loss();
  CHECK(x[(1 * T + 2) * C + 3] == wte[4 * C + 3] + wpe[(pos0 + 2) * C + 3]);
  AccumulatedGrad dwte(V * C, 64), dwpe(T_max * C, 65);
  token_embedding_backward(dwte.data(), weight.data(), tokens.data(), B * T, C);
  position_embedding_backward(dwpe.data(), weight.data(), B, T, C, pos0);
  check_gradient("dwte", wte.data(), dwte.added().data(), V * C, loss);
  check_gradient("dwpe", wpe.data(), dwpe.added().data(), T_max * C, loss);

  const std::vector<int32_t> bad = {1, 5, 1, 0, 2, 4};
  CHECK_THROWS_AS(token_embedding_forward(x.data(), bad.data(), wte.data(), B * T, C, V), InputError);
}

TEST_CASE("residual adds the branch") {
  Vec x = random_normal(6, 71);
  const Vec start = x, branch = random_normal(6, 72);
  residual_forward(x.data(), branch.data(), 6);
  for (int i = 0; i < 6; ++i) CHECK(x[i] == start[i] + branch[i]);
}
