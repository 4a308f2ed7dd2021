#include <doctest/doctest.h>

#include <cmath>

#include "core/rng.h"

using namespace dilatron;

// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32 10 rounds).
TEST_CASE("philox4x32-10 matches the Random123 known answers") {
  uint32_t c0[4] = {0, 0, 0, 0};
  philox4x32_10(c0, {0, 0});
  CHECK(c0[0] == 0x6627e8d5u);
  CHECK(c0[1] == 0xe169c58du);
  CHECK(c0[2] == 0xbc57ac4cu);
  CHECK(c0[3] == 0x9b00dbd8u);

  uint32_t c1[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
  philox4x32_10(c1, {0xffffffffu, 0xffffffffu});
  CHECK(c1[0] == 0x408f276du);
  CHECK(c1[1] == 0x41c83b0eu);
  CHECK(c1[2] == 0xa20bc7c6u);
  CHECK(c1[3] == 0x6d5451fdu);

  uint32_t c2[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
  philox4x32_10(c2, {0xa4093822u, 0x299f31d0u});
  CHECK(c2[0] == 0xd16cfe09u);
  CHECK(c2[1] == 0x94fdccebu);
  CHECK(c2[2] == 0x5001e420u);
  CHECK(c2[3] == 0x24126ea1u);
}

TEST_CASE("a value depends only on seed, stream and index") {
  PhiloxKey k = philox_key(1234);
  uint64_t s = name_stream("blocks.3.attn.qkv.weight");
  CHECK(philox_normal(k, s, 77) == philox_normal(k, s, 77));
  CHECK(philox_normal(k, s, 77) != philox_normal(k, s, 78));
  CHECK(philox_normal(k, s, 77) != philox_normal(k, name_stream("blocks.3.attn.proj.weight"), 77));
  CHECK(philox_normal(philox_key(1235), s, 77) != philox_normal(k, s, 77));
}

TEST_CASE("normal draws have mean 0 and variance 1") {
  CounterRng rng(7, 1);
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    double x = rng.normal();
    sum += x;
    sq += x * x;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  CHECK(std::abs(mean) < 0.01);
  CHECK(std::abs(var - 1.0) < 0.02);
}

TEST_CASE("a generator rebuilt from its saved state continues the same sequence") {
  CounterRng a(42, 9);
  for (int i = 0; i < 10; ++i) a.below(1000);
  CounterRng b(a.seed(), a.stream(), a.offset());
  for (int i = 0; i < 10; ++i) CHECK(a.below(1000) == b.below(1000));
}
