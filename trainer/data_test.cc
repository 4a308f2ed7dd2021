#include "trainer/data.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"

using namespace dilatron;

namespace {

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

std::string write_file(const std::string& name, const std::string& bytes) {
  std::string path = temp_path(name);
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
  return path;
}

// An llm.c shard; the header fields and the token count written can be made inconsistent.
std::string shard_bytes(const std::vector<uint16_t>& tokens, int32_t magic = 20240520,
                        int32_t version = 1, int64_t header_count = -1) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = static_cast<int32_t>(header_count < 0 ? tokens.size() : header_count);
  std::string bytes(reinterpret_cast<const char*>(header.data()), header.size() * 4);
  bytes.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
  return bytes;
}

std::vector<uint16_t> random_tokens(int64_t n, int vocab, uint64_t seed) {
  CounterRng rng(seed, 7);
  std::vector<uint16_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<uint16_t>(rng.below(static_cast<uint64_t>(vocab)));
  return t;
}

std::string random_text(int64_t n, uint64_t seed) {
  CounterRng rng(seed, 8);
  std::string s(static_cast<size_t>(n), '\0');
  for (auto& c : s) c = static_cast<char>(rng.below(256));
  return s;
}

DataSpec shard_spec(const std::string& path, int seq_len = 16, int vocab = 50257) {
  DataSpec spec;
  spec.path = path;
  spec.format = TokenFileFormat::tokens;
  spec.val_fraction = 0.1;
  spec.seq_len = seq_len;
  spec.vocab_size = vocab;
  return spec;
}

// Message of the InputError that load() throws; fails the test if it throws nothing else.
std::string load_error(const DataSpec& spec) {
  try {
    TokenData::load(spec);
  } catch (const InputError& e) {
    return e.what();
  }
  FAIL("load() did not throw InputError");
  return {};
}

void check_error(const DataSpec& spec, const std::string& file, const std::string& phrase) {
  std::string message = load_error(spec);
  CHECK_MESSAGE(message.find(file) != std::string::npos, message);
  CHECK_MESSAGE(message.find(phrase) != std::string::npos, message);
  CHECK_MESSAGE(message.find('\n') == std::string::npos, message);
}

struct Window {
  std::vector<int32_t> inputs, targets;
};

Window train_window(const TokenData& data, uint64_t seed, int64_t step, int64_t j, int64_t begin,
                    int64_t len) {
  Window w{std::vector<int32_t>(len, -1), std::vector<int32_t>(len, -1)};
  data.train_sequence(seed, step, j, begin, len, w.inputs.data(), w.targets.data());
  return w;
}

}  // namespace

TEST_CASE("text: every byte is a token, the split is at a token boundary") {
  std::string text = random_text(1000, 1);
  DataSpec spec;
  spec.path = write_file("text.txt", text);
  spec.format = TokenFileFormat::text;
  spec.val_fraction = 0.25;
  spec.seq_len = 8;
  spec.vocab_size = 256;
  TokenData data = TokenData::load(spec);
  CHECK(data.train_tokens() == 750);
  CHECK(data.val_tokens() == 250);
  CHECK(data.num_val_sequences() == 250 / 9);

  // The validation windows come from the last quarter and carry its bytes, shifted by one.
  for (int64_t i = 0; i < data.num_val_sequences(); ++i) {
    std::vector<int32_t> in(8, -1), tg(8, -1);
    data.val_sequence(i, 0, 8, in.data(), tg.data());
    std::string window = decode_bytes(in) + decode_bytes({tg.back()});
    size_t at = text.find(window, 750);
    REQUIRE(at != std::string::npos);
    CHECK(std::vector<int32_t>(in.begin() + 1, in.end()) == std::vector<int32_t>(tg.begin(), tg.end() - 1));
  }
}

TEST_CASE("shard: tokens, split sizes and the inputs/targets shift") {
  auto tokens = random_tokens(5003, 50257, 2);
  TokenData data = TokenData::load(shard_spec(write_file("a.bin", shard_bytes(tokens))));
  CHECK(data.val_tokens() == 500);  // floor(5003 * 0.1)
  CHECK(data.train_tokens() == 4503);

  std::vector<uint16_t> train(tokens.begin(), tokens.begin() + 4503);
  for (int64_t j = 0; j < 50; ++j) {
    int64_t start = data.train_window_start(9, 3, j);
    REQUIRE(start >= 0);
    REQUIRE(start + 17 <= 4503);
    Window w = train_window(data, 9, 3, j, 0, 16);
    for (int i = 0; i < 16; ++i) {
      CHECK(w.inputs[i] == train[start + i]);
      CHECK(w.targets[i] == train[start + i + 1]);
    }
  }

  // Validation windows: non-overlapping, inside the last 500 tokens, the last ending at the end.
  REQUIRE(data.num_val_sequences() == 500 / 17);
  std::vector<int32_t> in(16), tg(16);
  int64_t previous_end = 0;
  for (int64_t i = 0; i < data.num_val_sequences(); ++i) {
    std::fill(in.begin(), in.end(), -1);
    std::fill(tg.begin(), tg.end(), -1);
    data.val_sequence(i, 0, 16, in.data(), tg.data());
    // Locate the window by its first 16 tokens (random 16-grams over 50257 ids are unique).
    auto at = std::search(tokens.begin() + 4503, tokens.end(), in.begin(), in.end());
    REQUIRE(at != tokens.end());
    int64_t start = at - tokens.begin();
    CHECK(start >= previous_end);
    previous_end = start + 17;
    CHECK(tg[15] == tokens[start + 16]);
  }
  CHECK(previous_end == 5003);
}

TEST_CASE("a separate validation file") {
  auto train = random_tokens(300, 1000, 3);
  auto val = random_tokens(40, 1000, 4);
  DataSpec spec = shard_spec(write_file("t.bin", shard_bytes(train)), 9, 1000);
  spec.val_path = write_file("v.bin", shard_bytes(val));
  TokenData data = TokenData::load(spec);
  CHECK(data.train_tokens() == 300);
  CHECK(data.val_tokens() == 40);
  REQUIRE(data.num_val_sequences() == 4);
  std::vector<int32_t> in(9, -1), tg(9, -1);
  data.val_sequence(3, 0, 9, in.data(), tg.data());
  CHECK(in[0] == val[30]);
  CHECK(tg[8] == val[39]);
}

TEST_CASE("chunks of a window are slices of the full window") {
  auto tokens = random_tokens(4000, 50257, 5);
  TokenData data = TokenData::load(shard_spec(write_file("c.bin", shard_bytes(tokens)), 32));
  for (int64_t j = 0; j < 8; ++j) {
    Window full = train_window(data, 11, 7, j, 0, 32);
    for (int64_t begin : {0, 8, 16, 24}) {
      Window chunk = train_window(data, 11, 7, j, begin, 8);
      for (int i = 0; i < 8; ++i) {
        CHECK(chunk.inputs[i] == full.inputs[begin + i]);
        CHECK(chunk.targets[i] == full.targets[begin + i]);
      }
    }
    std::vector<int32_t> in(5, -1), tg(5, -1), vin(32, -1), vtg(32, -1);
    data.val_sequence(j % data.num_val_sequences(), 0, 32, vin.data(), vtg.data());
    data.val_sequence(j % data.num_val_sequences(), 27, 5, in.data(), tg.data());
    CHECK(std::vector<int32_t>(vin.begin() + 27, vin.end()) == in);
    CHECK(std::vector<int32_t>(vtg.begin() + 27, vtg.end()) == tg);
  }
  std::vector<int32_t> in(8), tg(8);
  CHECK_THROWS_AS(data.train_sequence(1, 0, 0, 28, 8, in.data(), tg.data()), Error);
}

TEST_CASE("window starts depend only on (seed, step, j)") {
  auto tokens = random_tokens(100000, 50257, 6);
  TokenData a = TokenData::load(shard_spec(write_file("d.bin", shard_bytes(tokens))));
  TokenData b = TokenData::load(shard_spec(write_file("d.bin", shard_bytes(tokens))));

  // Forward order on one instance, reverse order on another: the same windows.
  std::vector<int64_t> forward, backward;
  for (int64_t step = 0; step < 10; ++step)
    for (int64_t j = 0; j < 10; ++j) forward.push_back(a.train_window_start(42, step, j));
  for (int64_t step = 9; step >= 0; --step)
    for (int64_t j = 9; j >= 0; --j) backward.push_back(b.train_window_start(42, step, j));
  std::reverse(backward.begin(), backward.end());
  CHECK(forward == backward);
  // 100 draws from ~90000 starts: nearly all distinct, so step and j both matter.
  CHECK(std::set<int64_t>(forward.begin(), forward.end()).size() >= 95);

  int same = 0;
  for (int64_t j = 0; j < 100; ++j) same += a.train_window_start(42, 0, j) == a.train_window_start(43, 0, j);
  CHECK(same <= 2);

  // The starts are spread over the whole training split (mean ~ half of it).
  double mean = 0;
  const int n = 4000;
  for (int64_t j = 0; j < n; ++j) mean += static_cast<double>(a.train_window_start(1, 5, j)) / n;
  const double range = static_cast<double>(a.train_tokens() - 16);
  CHECK(std::abs(mean / range - 0.5) < 4 * std::sqrt(1.0 / 12 / n));
}

TEST_CASE("byte tokenizer") {
  std::string text = "héllo\n\x01\xff";
  auto tokens = encode_bytes(text);
  CHECK(tokens.size() == text.size());
  CHECK(tokens.back() == 255);
  CHECK(decode_bytes(tokens) == text);
  CHECK(decode_bytes({72, 256, 105, 50256}) == "H<256>i<50256>");
}

TEST_CASE("each input problem is an InputError naming the file") {
  auto tokens = random_tokens(1000, 50000, 7);
  const std::string missing = temp_path("no_such_file.bin");
  check_error(shard_spec(missing), missing, "No such file");
  check_error(shard_spec(write_file("empty.bin", "")), "empty.bin", "empty");
  DataSpec empty_text = shard_spec(write_file("empty.txt", ""));
  empty_text.format = TokenFileFormat::text;
  check_error(empty_text, "empty.txt", "empty");
  check_error(shard_spec(temp_path("")), temp_path(""), "cannot read");

  check_error(shard_spec(write_file("magic.bin", shard_bytes(tokens, 12345))), "magic.bin", "magic 12345");
  check_error(shard_spec(write_file("version.bin", shard_bytes(tokens, 20240520, 2))), "version.bin",
              "version 2");
  check_error(shard_spec(write_file("text_as_shard.bin", "hello world, this is text")),
              "text_as_shard.bin", "not a token shard");
  std::string full = shard_bytes(tokens);
  check_error(shard_spec(write_file("short_header.bin", full.substr(0, 100))), "short_header.bin",
              "shorter than the 1024-byte shard header");
  check_error(shard_spec(write_file("truncated.bin", full.substr(0, full.size() - 2))),
              "truncated.bin", "truncated or has trailing bytes");
  check_error(shard_spec(write_file("trailing.bin", full + "x")), "trailing.bin",
              "truncated or has trailing bytes");
  check_error(shard_spec(write_file("count.bin", shard_bytes(tokens, 20240520, 1, 999))), "count.bin",
              "header says 999 tokens");

  check_error(shard_spec(write_file("vocab.bin", full), 16, 1000), "vocab.bin",
              "not below model.vocab_size = 1000");
  DataSpec bytes_vocab;
  bytes_vocab.path = write_file("high.txt", "abc\xf0");
  bytes_vocab.format = TokenFileFormat::text;
  bytes_vocab.seq_len = 2;
  bytes_vocab.vocab_size = 128;
  check_error(bytes_vocab, "high.txt", "token 240 at position 3");

  // 1000 tokens, val 10%: 900 training and 100 validation tokens.
  check_error(shard_spec(write_file("short.bin", full), 1000), "short.bin",
              "has 900 training tokens, fewer than model.seq_len + 1 = 1001");
  check_error(shard_spec(write_file("short_val.bin", full), 100), "short_val.bin",
              "100 validation tokens");
  DataSpec val = shard_spec(write_file("ok.bin", full), 100);
  val.val_path = write_file("val_short.bin", shard_bytes(random_tokens(50, 50000, 8)));
  check_error(val, "val_short.bin", "data.val_path");
  val.val_path = write_file("val_magic.bin", shard_bytes(tokens, 1));
  check_error(val, "val_magic.bin", "data.val_path");

  // No validation split at all is allowed.
  DataSpec no_val = shard_spec(write_file("ok.bin", full), 100);
  no_val.val_fraction = 0;
  TokenData data = TokenData::load(no_val);
  CHECK(data.train_tokens() == 1000);
  CHECK(data.num_val_sequences() == 0);
}
