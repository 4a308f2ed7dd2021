#include "optim/adamw.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"

namespace dilatron {
namespace {

// The textbook update in double, written independently of the library.
struct AdamWReference {
  std::vector<double> p, m, v;

  void step(const std::vector<float>& g, double lr, double b1, double b2, double eps, double wd, int64_t t) {
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * double(g[i]) * g[i];
      const double m_hat = m[i] / (1 - std::pow(b1, double(t)));
      const double v_hat = v[i] / (1 - std::pow(b2, double(t)));
      p[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + wd * p[i]);
    }
  }
};

std::vector<float> normals(CounterRng& rng, size_t n, double scale) {
  std::vector<float> x(n);
  for (float& e : x) e = static_cast<float>(scale * rng.normal());
  return x;
}

// fp32 against fp64: |got - want| <= rtol * (|want| + max|want|), rtol = 1e-5 (a few fp32 ulps
// per step, summed over the steps, with headroom); elements near 0 are judged against the
// tensor's scale because their relative error is not meaningful.
void check_close(const std::vector<float>& got, const std::vector<double>& want, const char* what) {
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    REQUIRE(std::isfinite(got[i]));
    worst = std::max(worst, std::abs(got[i] - want[i]) / (std::abs(want[i]) + scale));
  }
  INFO(what, " worst scaled error ", worst);
  CHECK(worst <= 1e-5);
}

TEST_CASE("adamw_update_cpu matches a double-precision AdamW over several steps") {
  const size_t n = 4099;
  for (float weight_decay : {0.0f, 0.1f}) {
    CounterRng rng(20261127, weight_decay == 0.0f ? 1 : 2);
    std::vector<float> p = normals(rng, n, 1.0), m(n, 0.0f), v(n, 0.0f);
    AdamWReference ref{{p.begin(), p.end()}, std::vector<double>(n, 0.0), std::vector<double>(n, 0.0)};
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    for (int64_t t = 1; t <= 5; ++t) {
      // Gradients of varied magnitude, so that eps and the ratio mhat/sqrt(vhat) both matter.
      std::vector<float> g = normals(rng, n, 1.0);
      for (size_t i = 0; i < n; ++i) g[i] *= static_cast<float>(std::pow(10.0, -4.0 * rng.uniform()));
      adamw_update_cpu(p.data(), g.data(), m.data(), v.data(), static_cast<int64_t>(n),
                       AdamWStep{lr, b1, b2, eps, weight_decay, t});
      ref.step(g, lr, b1, b2, eps, weight_decay, t);
    }
    INFO("weight_decay ", weight_decay);
    check_close(p, ref.p, "param");
    check_close(m, ref.m, "m");
    check_close(v, ref.v, "v");
  }
}

TEST_CASE("weight decay shrinks a parameter whose gradient is zero, and only by lr * wd * p") {
  float p = 2.0f, g = 0.0f, m = 0.0f, v = 0.0f;
  adamw_update_cpu(&p, &g, &m, &v, 1, AdamWStep{0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, 1});
  CHECK(p == doctest::Approx(2.0 - 0.1 * 0.5 * 2.0).epsilon(1e-7));
}

TEST_CASE("the first step moves each parameter by about lr against the gradient's sign") {
  // At step 1 mhat = g and vhat = g^2, so the step is lr * g / (|g| + eps).
  float p[2] = {0.5f, 0.5f}, g[2] = {3.0f, -0.02f}, m[2] = {}, v[2] = {};
  adamw_update_cpu(p, g, m, v, 2, AdamWStep{0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, 1});
  CHECK(p[0] == doctest::Approx(0.49).epsilon(1e-6));
  CHECK(p[1] == doctest::Approx(0.51).epsilon(1e-6));
}

TEST_CASE("adamw rejects a 0-based step") {
  float p = 1, g = 1, m = 0, v = 0;
  CHECK_THROWS(adamw_update_cpu(&p, &g, &m, &v, 1, AdamWStep{0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 0}));
}

TEST_CASE("adamw_chunks covers each segment exactly, in bounded pieces cut at multiples of the size") {
  // Unaligned begins, a segment spanning several cuts, one ending on a cut, an empty one, a gap.
  const std::vector<AdamWSegment> segments = {
      {3, 1, true}, {5, 30, false}, {40, 0, true}, {41, 23, true}, {64, 16, false}, {100, 1, false}};
  const std::vector<AdamWChunk> chunks = adamw_chunks(segments, 16);
  std::vector<int> covered(128, 0), decayed(128, 0);
  for (const AdamWChunk& c : chunks) {
    REQUIRE(c.length >= 1);
    CHECK(c.length <= 16);
    // A chunk never crosses a multiple of 16, so interior chunks start float4-aligned.
    CHECK(c.begin / 16 == (c.begin + c.length - 1) / 16);
    for (int64_t i = c.begin; i < c.begin + c.length; ++i) ++covered[i], decayed[i] = c.weight_decay;
  }
  std::vector<int> want_covered(128, 0), want_decayed(128, 0);
  for (const AdamWSegment& s : segments) {
    for (int64_t i = s.begin; i < s.begin + s.length; ++i) want_covered[i] = 1, want_decayed[i] = s.weight_decay;
  }
  CHECK(covered == want_covered);
  CHECK(decayed == want_decayed);
  // [5, 35) is cut at 16 and 32; [41, 64) at 48; [64, 80) is one whole chunk.
  CHECK(chunks.size() == 1 + 3 + 2 + 1 + 1);
}

TEST_CASE("adamw_chunks rejects overlapping segments and negative sizes") {
  CHECK_THROWS(adamw_chunks({{0, 10, true}, {9, 4, true}}, 16));
  CHECK_THROWS(adamw_chunks({{20, 4, true}, {0, 21, false}}, 16));  // overlap out of order
  CHECK_THROWS(adamw_chunks({{-1, 4, true}}, 16));
  CHECK_THROWS(adamw_chunks({{0, -4, true}}, 16));
  CHECK_NOTHROW(adamw_chunks({{0, 10, true}, {10, 4, false}}, 16));  // adjacent is fine
}

}  // namespace
}  // namespace dilatron
