// Test helpers: fp64 central-difference gradient checks and seeded random fills.
//
// Tolerance rule: |analytic - fd| <= rtol * max(|analytic|, |fd|) + atol. With step h the
// central difference has truncation error ~h^2 |f'''| / 6 and rounding error
// ~eps_f64 |loss| / h; h = 1e-5 keeps both below 1e-9 for the O(1) losses used in tests,
// so rtol = 1e-6, atol = 1e-8 leave a 10x margin and still catch any real mistake.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "core/rng.h"

namespace dilatron::testing {

inline std::vector<double> random_normal(int64_t n, uint64_t seed, double stddev = 1.0) {
  CounterRng rng(seed, /*stream=*/0);
  std::vector<double> out(static_cast<size_t>(n));
  for (double& x : out) x = stddev * rng.normal();
  return out;
}

template <typename T>
std::vector<T> nan_filled(int64_t n) {
  return std::vector<T>(static_cast<size_t>(n), std::numeric_limits<T>::quiet_NaN());
}

struct GradTolerance {
  double rtol = 1e-6;
  double atol = 1e-8;
  double h = 1e-5;
};

// Checks analytic[i] == d loss / d x[i] for the given indices (all when empty). loss()
// must read x; x is restored afterwards. Also requires a non-zero gradient somewhere, so
// a backward that writes nothing cannot pass.
template <class Loss>
void check_gradient(const std::string& what, double* x, const double* analytic, int64_t n,
                    Loss&& loss, std::vector<int64_t> indices = {}, GradTolerance tol = {}) {
  if (indices.empty())
    for (int64_t i = 0; i < n; ++i) indices.push_back(i);
  double worst_ratio = 0, worst_fd = 0, worst_an = 0, largest_fd = 0;
  int64_t worst_i = -1;
  for (int64_t i : indices) {
    const double saved = x[i];
    x[i] = saved + tol.h;
    const double plus = loss();
    x[i] = saved - tol.h;
    const double minus = loss();
    x[i] = saved;
    const double fd = (plus - minus) / (2 * tol.h);
    const double bound = tol.rtol * std::max(std::abs(fd), std::abs(analytic[i])) + tol.atol;
    const double ratio = std::abs(fd - analytic[i]) / bound;
    largest_fd = std::max(largest_fd, std::abs(fd));
    if (!(ratio <= worst_ratio)) {
      worst_ratio = ratio;
      worst_i = i;
      worst_fd = fd;
      worst_an = analytic[i];
    }
  }
  INFO(what, ": worst index ", worst_i, " analytic ", worst_an, " finite difference ", worst_fd);
  CHECK(worst_ratio <= 1.0);
  CHECK(largest_fd > 1e-6);
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace dilatron::testing
