// The seeded values both collectives tests (collectives_test, collectives_gpu_test) move around,
// in the style of nccl-tests: every dtype gets values whose sums over up to 8 ranks are exact, so
// a result is checked bit for bit against the reduction computed here, and a poison value that
// an unwritten element keeps. Test code only.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "comm/communicator.h"
#include "core/bf16.h"
#include "core/rng.h"

namespace dilatron::collectives_test {

inline constexpr int64_t kSizes[] = {0, 1, 7, 1000};
inline constexpr int64_t kLarge = 1 << 20;

inline uint32_t random_bits(uint64_t seed, int rank, int64_t i) {
  uint32_t w[4];
  philox_block(philox_key(seed), static_cast<uint64_t>(rank), static_cast<uint64_t>(i), w);
  return w[0];
}

// Exactly representable per dtype, and so are sums over up to 8 ranks:
// f32/f64: multiples of 1/64 in (-16, 16); i32: integers in [-10^6, 10^6]; bf16: integers in [-8, 8].
template <typename T> T value(uint64_t seed, int rank, int64_t i);
template <> inline float value<float>(uint64_t seed, int rank, int64_t i) {
  return static_cast<float>(static_cast<int>(random_bits(seed, rank, i) % 2047) - 1023) / 64.0f;
}
template <> inline double value<double>(uint64_t seed, int rank, int64_t i) {
  return static_cast<double>(static_cast<int>(random_bits(seed, rank, i) % 2047) - 1023) / 64.0;
}
template <> inline int32_t value<int32_t>(uint64_t seed, int rank, int64_t i) {
  return static_cast<int32_t>(random_bits(seed, rank, i) % 2000001) - 1000000;
}
template <> inline bf16 value<bf16>(uint64_t seed, int rank, int64_t i) {
  return bf16::from_float(static_cast<float>(static_cast<int>(random_bits(seed, rank, i) % 17) - 8));
}

inline double as_double(float x) { return x; }
inline double as_double(double x) { return x; }
inline double as_double(int32_t x) { return x; }
inline double as_double(bf16 x) { return x.to_float(); }

template <typename T> T from_double(double x) { return static_cast<T>(x); }
template <> inline bf16 from_double<bf16>(double x) { return bf16::from_float(static_cast<float>(x)); }

// What a buffer holds before an operation writes it, so an unwritten element is wrong.
template <typename T> T poison() {
  if constexpr (std::is_same_v<T, int32_t>) return INT32_MIN;
  else if constexpr (std::is_same_v<T, bf16>) return bf16::from_float(std::numeric_limits<float>::quiet_NaN());
  else return std::numeric_limits<T>::quiet_NaN();
}

// Elements [begin, begin + count) of rank `rank`'s values.
template <typename T> std::vector<T> rank_values(uint64_t seed, int rank, int64_t begin, int64_t count) {
  std::vector<T> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) v[static_cast<size_t>(i)] = value<T>(seed, rank, begin + i);
  return v;
}

// Element `i` of the reduction over ranks [0, size) of value(seed, rank, i).
template <typename T> T reduced(uint64_t seed, int size, int64_t i, ReduceOp op) {
  double acc = as_double(value<T>(seed, 0, i));
  for (int r = 1; r < size; ++r) {
    double x = as_double(value<T>(seed, r, i));
    acc = op == ReduceOp::sum ? acc + x : std::max(acc, x);
  }
  return from_double<T>(acc);
}

}  // namespace dilatron::collectives_test
