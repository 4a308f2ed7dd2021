// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). A value is a pure
// function of (key, counter), so every initial parameter value depends only on
// (seed, parameter name, element index) and never on how the tensor is split across ranks.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>

#if defined(__CUDACC__)
#define DILATRON_HD __host__ __device__
#else
#define DILATRON_HD
#endif

namespace dilatron {

struct PhiloxKey {
  uint32_t k0, k1;
};

DILATRON_HD inline void philox4x32_10(uint32_t c[4], PhiloxKey key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kM0) * c[0];
    uint64_t p1 = static_cast<uint64_t>(kM1) * c[2];
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    uint32_t n0 = hi1 ^ c[1] ^ k0;
    uint32_t n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
    k0 += kW0;
    k1 += kW1;
  }
}

// Uniform in (0, 1]: never 0, so log() is safe in Box-Muller.
DILATRON_HD inline double u32_to_unit(uint32_t x) { return (static_cast<double>(x) + 1.0) / 4294967296.0; }

// Four 32-bit words for (key, stream, index): the stream separates independent uses of
// one key (parameter init, data order, sampling, dropout-like noise).
DILATRON_HD inline void philox_block(PhiloxKey key, uint64_t stream, uint64_t index, uint32_t out[4]) {
  out[0] = static_cast<uint32_t>(index);
  out[1] = static_cast<uint32_t>(index >> 32);
  out[2] = static_cast<uint32_t>(stream);
  out[3] = static_cast<uint32_t>(stream >> 32);
  philox4x32_10(out, key);
}

DILATRON_HD inline double philox_uniform(PhiloxKey key, uint64_t stream, uint64_t index) {
  uint32_t w[4];
  philox_block(key, stream, index, w);
  return u32_to_unit(w[0]);
}

// Standard normal by Box-Muller on the first two words of the block.
DILATRON_HD inline double philox_normal(PhiloxKey key, uint64_t stream, uint64_t index) {
  uint32_t w[4];
  philox_block(key, stream, index, w);
  double r = std::sqrt(-2.0 * std::log(u32_to_unit(w[0])));
  return r * std::cos(6.283185307179586 * u32_to_unit(w[1]));
}

inline PhiloxKey philox_key(uint64_t seed) {
  return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
}

// Stable 64-bit hash of a parameter name (xxHash64, seed 0): part of the init stream.
uint64_t name_stream(std::string_view name);

// A sequential generator whose whole state is (seed, stream, offset): checkpoints store
// the three integers and a resumed run draws exactly the numbers it would have drawn.
class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t stream, uint64_t offset = 0)
      : seed_(seed), stream_(stream), offset_(offset) {}

  double uniform() { return philox_uniform(philox_key(seed_), stream_, offset_++); }
  double normal() { return philox_normal(philox_key(seed_), stream_, offset_++); }
  // Uniform integer in [0, n); n must be > 0. 64 random bits make the modulo bias negligible.
  uint64_t below(uint64_t n) {
    uint32_t w[4];
    philox_block(philox_key(seed_), stream_, offset_++, w);
    uint64_t x = (static_cast<uint64_t>(w[0]) << 32) | w[1];
    return x % n;
  }

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t offset() const { return offset_; }

 private:
  uint64_t seed_, stream_, offset_;
};

}  // namespace dilatron
