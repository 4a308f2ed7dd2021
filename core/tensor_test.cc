#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>

#include "core/tensor.h"

using namespace dilatron;

TEST_CASE("tensor shape, bytes and typed access") {
  Tensor t = Tensor::zeros({2, 3, 4}, DType::f32);
  CHECK(t.numel() == 24);
  CHECK(t.nbytes() == 96);
  CHECK(reinterpret_cast<uintptr_t>(t.raw()) % 64 == 0);
  float* p = t.data<float>();
  p[23] = 5.0f;
  CHECK(t.reshaped({6, 4}).data<float>()[23] == 5.0f);
  CHECK_THROWS_AS(t.data<int32_t>(), Error);
  CHECK_THROWS_AS(t.reshaped({5, 5}), Error);
  Tensor c = t.to(Device::cpu);
  p[23] = 1.0f;
  CHECK(c.data<float>()[23] == 5.0f);
  CHECK(t.describe() == "f32[2,3,4]@cpu");
}

TEST_CASE("bf16 rounds to nearest even") {
  CHECK(bf16::from_float(1.0f).to_float() == 1.0f);
  CHECK(bf16::from_float(1.00390625f).to_float() == 1.0f);        // halfway, even stays
  CHECK(bf16::from_float(1.01171875f).to_float() == 1.015625f);   // halfway, odd rounds up
  CHECK(std::isnan(bf16::from_float(std::nanf("")).to_float()));
}
