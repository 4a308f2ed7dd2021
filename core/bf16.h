// bfloat16 storage type for the CPU side: conversions round to nearest even, like the GPU.
#pragma once

#include <cstdint>
#include <cstring>

namespace dilatron {

struct bf16 {
  uint16_t bits = 0;

  static bf16 from_float(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    bf16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays a quiet NaN
      b.bits = static_cast<uint16_t>((u >> 16) | 0x40u);
      return b;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    b.bits = static_cast<uint16_t>(u >> 16);
    return b;
  }

  float to_float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
};

}  // namespace dilatron
