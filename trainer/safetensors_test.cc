#include "trainer/safetensors.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "core/rng.h"

using namespace dilatron;

namespace {

Tensor random_tensor(std::vector<int64_t> shape, DType dtype, uint64_t seed) {
  Tensor t = Tensor::empty(std::move(shape), dtype);
  CounterRng rng(seed, 1);
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (dtype) {
      case DType::f32: t.data<float>()[i] = static_cast<float>(rng.normal()); break;
      case DType::f64: t.data<double>()[i] = rng.normal(); break;
      case DType::bf16: t.data<bf16>()[i] = bf16::from_float(static_cast<float>(rng.normal())); break;
      case DType::i32: t.data<int32_t>()[i] = static_cast<int32_t>(rng.below(1u << 31)) - (1 << 30); break;
    }
  }
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::string set_header(const std::string& json) {
  std::string padded = json;
  padded.resize((padded.size() + 7) / 8 * 8, ' ');
  uint64_t n = padded.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + padded;
}

void check_rejected(const std::string& bytes, const std::string& phrase) {
  try {
    safetensors_parse(bytes, "bad.safetensors");
    FAIL("parse accepted a corrupt file, expected: " << phrase);
  } catch (const InputError& e) {
    std::string message = e.what();
    CHECK_MESSAGE(message.find("bad.safetensors") != std::string::npos, message);
    CHECK_MESSAGE(message.find(phrase) != std::string::npos, message);
  }
}

}  // namespace

TEST_CASE("round trip of several dtypes and shapes with metadata") {
  std::vector<NamedTensor> tensors = {
      {"wte", random_tensor({7, 5}, DType::f32, 1)},
      {"h.0.ln.bias", random_tensor({3}, DType::f64, 2)},
      {"adam.m", random_tensor({2, 3, 4}, DType::bf16, 3)},
      {"rng", random_tensor({}, DType::i32, 4)},
      {"empty", random_tensor({0, 4}, DType::f32, 5)},
      {"odd", random_tensor({3}, DType::bf16, 6)},
  };
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "120"}};
  std::string bytes = safetensors_serialize(tensors, metadata);

  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + 7 * 5 * 4 + 3 * 8 + 24 * 2 + 4 + 0 + 3 * 2);

  std::map<std::string, std::string> read_metadata;
  auto parsed = safetensors_parse(bytes, "x", &read_metadata);
  CHECK(read_metadata == metadata);
  REQUIRE(parsed.size() == tensors.size());
  // Tensors come back in file order, which is the order written.
  for (size_t i = 0; i < tensors.size(); ++i) {
    CHECK(parsed[i].name == tensors[i].name);
    CHECK(same_bytes(parsed[i].tensor, tensors[i].tensor));
  }
}

TEST_CASE("the header bytes match the format") {
  Tensor b = Tensor::empty({2}, DType::f32);
  b.data<float>()[0] = 1.0f;
  b.data<float>()[1] = -2.0f;
  Tensor a = Tensor::empty({1, 1}, DType::i32);
  a.data<int32_t>()[0] = 7;
  std::string bytes = safetensors_serialize({{"b", b}, {"a", a}}, {{"format", "pt"}});

  // 141 bytes of JSON padded with 3 spaces to 144 = 0x90; "b" is written first.
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"a":{"data_offsets":[8,12],"dtype":"I32","shape":[1,1]},)"
      R"("b":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}}   )";
  std::string expected("\x90\0\0\0\0\0\0\0", 8);
  expected += json;
  expected += std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);  // 1.0f, -2.0f
  expected += std::string("\x07\x00\x00\x00", 4);
  CHECK(json.size() == 144);
  CHECK(bytes == expected);
}

TEST_CASE("corrupt files are rejected with InputError naming the source") {
  Tensor t = random_tensor({4}, DType::f32, 7);
  std::string good = safetensors_serialize({{"t", t}}, {});
  CHECK(safetensors_parse(good, "ok").size() == 1);

  check_rejected(good.substr(0, 5), "too short");
  check_rejected(good.substr(0, good.size() - 1), "data_offsets [0, 16] outside the 15 data bytes");
  check_rejected(good.substr(0, 20), "exceeds");
  check_rejected(good + "xx", "trailing bytes");
  std::string huge = good;
  huge[7] = '\x7f';
  check_rejected(huge, "exceeds");
  std::string bad_json = good;
  bad_json[8] = 'x';
  check_rejected(bad_json, "not valid JSON");

  const std::string data(16, '\0');
  check_rejected(set_header("[1,2]") + data, "not a JSON object");
  check_rejected(set_header(R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}})") + data, "unsupported dtype");
  check_rejected(set_header(R"({"t":{"shape":[4],"data_offsets":[0,16]}})") + data, "no dtype");
  check_rejected(set_header(R"({"t":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})") + data, "negative");
  check_rejected(set_header(R"({"t":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})") + data, "needs 20 bytes");
  check_rejected(set_header(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})") + data,
                 "larger than 16");
  check_rejected(set_header(R"({"t":{"dtype":"F32","shape":[16,16,16,16,16],"data_offsets":[0,16]}})") + data,
                 "needs more than the 16 data bytes");
  check_rejected(set_header(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[8,0]}})") + data, "outside");
  check_rejected(set_header(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0]}})") + data, "data_offsets");
  check_rejected(set_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("u":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})") + data,
                 "overlapping");
  check_rejected(set_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("u":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})") + data,
                 "gapped");
  check_rejected(set_header(R"({"__metadata__":{"a":1},"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})") + data,
                 "not a string");
}
