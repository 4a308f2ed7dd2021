#include "trainer/data.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "core/check.h"
#include "core/rng.h"

namespace dilatron {

static_assert(std::endian::native == std::endian::little, "token shards are little-endian");

namespace {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr int64_t kShardHeaderBytes = 256 * sizeof(int32_t);
// Philox stream of the training window starts ("datawind"): separate from parameter init.
constexpr uint64_t kTrainWindowStream = 0x6461746177696e64ull;

// An open file whose errors are the user's: a wrong path or an unreadable file.
class InputFile {
 public:
  InputFile(const std::string& path, const char* field) : path_(path), field_(field) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    DILATRON_CHECK_INPUT(fd_ >= 0, "{}: cannot open {}: {}; check the path", field_, path_,
                         std::strerror(errno));
    struct stat st;
    DILATRON_CHECK_INPUT(::fstat(fd_, &st) == 0, "{}: cannot stat {}: {}", field_, path_,
                         std::strerror(errno));
    size_ = st.st_size;
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() { ::close(fd_); }

  int64_t size() const { return size_; }

  // Reads up to `bytes` bytes; fewer only at the end of the file.
  int64_t read(void* dst, int64_t bytes) {
    int64_t done = 0;
    while (done < bytes) {
      ssize_t n = ::read(fd_, static_cast<char*>(dst) + done, static_cast<size_t>(bytes - done));
      if (n < 0 && errno == EINTR) continue;
      DILATRON_CHECK_INPUT(n >= 0, "{}: cannot read {}: {}; check the path and permissions",
                           field_, path_, std::strerror(errno));
      if (n == 0) break;
      done += n;
    }
    return done;
  }

 private:
  std::string path_;
  const char* field_;
  int fd_ = -1;
  int64_t size_ = 0;
};

std::vector<uint16_t> read_text(const std::string& path, const char* field) {
  InputFile file(path, field);
  std::vector<uint16_t> tokens;
  tokens.reserve(static_cast<size_t>(file.size()));
  std::vector<unsigned char> chunk(1 << 20);
  while (true) {
    int64_t n = file.read(chunk.data(), static_cast<int64_t>(chunk.size()));
    tokens.insert(tokens.end(), chunk.begin(), chunk.begin() + n);
    if (n < static_cast<int64_t>(chunk.size())) break;
  }
  DILATRON_CHECK_INPUT(!tokens.empty(), "{}: {} is empty; point it at a file with text", field, path);
  return tokens;
}

std::vector<uint16_t> read_shard(const std::string& path, const char* field) {
  InputFile file(path, field);
  int32_t header[256] = {};
  int64_t got = file.read(header, kShardHeaderBytes);
  DILATRON_CHECK_INPUT(got > 0, "{}: {} is empty; point it at a token shard", field, path);
  DILATRON_CHECK_INPUT(got < 4 || header[0] == kShardMagic,
                       "{}: {} is not a token shard (magic {}, expected {}); for raw text use "
                       "data.format: text, else write it with the llm.c shard header",
                       field, path, header[0], kShardMagic);
  DILATRON_CHECK_INPUT(got < 8 || header[1] == kShardVersion,
                       "{}: {} is shard version {}, only version {} is supported; re-export it "
                       "in the llm.c version-1 format (uint16 tokens)",
                       field, path, header[1], kShardVersion);
  DILATRON_CHECK_INPUT(got == kShardHeaderBytes,
                       "{}: {} is truncated: {} bytes, shorter than the {}-byte shard header; "
                       "re-create the file",
                       field, path, got, kShardHeaderBytes);
  int64_t count = header[2];
  int64_t payload = file.size() - kShardHeaderBytes;
  DILATRON_CHECK_INPUT(count >= 0 && payload == count * 2,
                       "{}: {} header says {} tokens ({} bytes) but {} bytes follow the header; "
                       "the file is truncated or has trailing bytes, re-create it",
                       field, path, count, count * 2, payload);
  DILATRON_CHECK_INPUT(count > 0, "{}: {} holds no tokens; point it at a non-empty shard", field, path);
  std::vector<uint16_t> tokens(static_cast<size_t>(count));
  got = file.read(tokens.data(), count * 2);
  DILATRON_CHECK_INPUT(got == count * 2,
                       "{}: {} shrank while being read ({} of {} token bytes); re-create it",
                       field, path, got, count * 2);
  return tokens;
}

std::shared_ptr<const std::vector<uint16_t>> read_tokens(const std::string& path, const char* field,
                                                         const DataSpec& spec) {
  auto tokens = std::make_shared<std::vector<uint16_t>>(
      spec.format == TokenFileFormat::text ? read_text(path, field) : read_shard(path, field));
  auto bad = std::find_if(tokens->begin(), tokens->end(),
                          [&](uint16_t t) { return t >= spec.vocab_size; });
  DILATRON_CHECK_INPUT(bad == tokens->end(),
                       "{}: {} has token {} at position {}, not below model.vocab_size = {}; set "
                       "model.vocab_size to the tokenizer's vocabulary size",
                       field, path, bad == tokens->end() ? 0 : *bad, bad - tokens->begin(),
                       spec.vocab_size);
  return tokens;
}

}  // namespace

TokenData TokenData::load(const DataSpec& spec) {
  DILATRON_CHECK(spec.seq_len > 0 && spec.vocab_size > 0, "seq_len {} vocab_size {}", spec.seq_len,
                 spec.vocab_size);
  TokenData data;
  data.seq_len_ = spec.seq_len;
  const int64_t window = int64_t{spec.seq_len} + 1;
  auto tokens = read_tokens(spec.path, "data.path", spec);
  const int64_t total = static_cast<int64_t>(tokens->size());
  int64_t val_size = 0;
  if (spec.val_path.empty()) {
    DILATRON_CHECK_INPUT(spec.val_fraction >= 0.0 && spec.val_fraction < 1.0,
                         "data.val_fraction = {} must be in [0, 1)", spec.val_fraction);
    val_size = static_cast<int64_t>(static_cast<double>(total) * spec.val_fraction);
    data.val_ = {tokens, total - val_size, val_size};
  }
  data.train_ = {tokens, 0, total - val_size};
  DILATRON_CHECK_INPUT(data.train_.size >= window,
                       "data.path: {} has {} training tokens, fewer than model.seq_len + 1 = {}; "
                       "use a longer file or a shorter seq_len",
                       spec.path, data.train_.size, window);
  if (spec.val_path.empty()) {
    DILATRON_CHECK_INPUT(spec.val_fraction == 0.0 || val_size >= window,
                         "data.path: {} has {} validation tokens (data.val_fraction = {}), fewer "
                         "than model.seq_len + 1 = {}; use a longer file, a larger val_fraction, "
                         "a data.val_path or a shorter seq_len",
                         spec.path, val_size, spec.val_fraction, window);
  } else {
    auto val = read_tokens(spec.val_path, "data.val_path", spec);
    data.val_ = {val, 0, static_cast<int64_t>(val->size())};
    DILATRON_CHECK_INPUT(data.val_.size >= window,
                         "data.val_path: {} has {} tokens, fewer than model.seq_len + 1 = {}; use "
                         "a longer file or a shorter seq_len",
                         spec.val_path, data.val_.size, window);
  }
  return data;
}

int64_t TokenData::train_window_start(uint64_t seed, int64_t step, int64_t j) const {
  DILATRON_CHECK(step >= 0 && step <= UINT32_MAX && j >= 0 && j <= UINT32_MAX,
                 "step {} sequence {}", step, j);
  uint32_t w[4];
  philox_block(philox_key(seed), kTrainWindowStream,
               (static_cast<uint64_t>(step) << 32) | static_cast<uint64_t>(j), w);
  const uint64_t starts = static_cast<uint64_t>(train_.size - seq_len_);
  // 64 random bits: the modulo bias is below starts / 2^64.
  return static_cast<int64_t>(((static_cast<uint64_t>(w[0]) << 32) | w[1]) % starts);
}

void TokenData::train_sequence(uint64_t seed, int64_t step, int64_t j, int64_t begin, int64_t len,
                               int32_t* inputs, int32_t* targets) const {
  copy_window(train_, train_window_start(seed, step, j), begin, len, inputs, targets);
}

int64_t TokenData::num_val_sequences() const { return val_.size / (int64_t{seq_len_} + 1); }

void TokenData::val_sequence(int64_t i, int64_t begin, int64_t len, int32_t* inputs,
                             int32_t* targets) const {
  const int64_t n = num_val_sequences();
  DILATRON_CHECK(i >= 0 && i < n, "validation sequence {} of {}", i, n);
  // Window i starts at floor(i * (V - L) / (n - 1)): consecutive starts differ by at least
  // L = seq_len + 1 because n * L <= V, and the last window ends at the split's end.
  const int64_t window = int64_t{seq_len_} + 1;
  const int64_t start =
      n == 1 ? 0
             : static_cast<int64_t>(static_cast<__int128>(i) * (val_.size - window) / (n - 1));
  copy_window(val_, start, begin, len, inputs, targets);
}

void TokenData::copy_window(const Split& split, int64_t start, int64_t begin, int64_t len,
                            int32_t* inputs, int32_t* targets) const {
  DILATRON_CHECK(begin >= 0 && len >= 0 && begin + len <= seq_len_,
                 "chunk [{}, {}) outside seq_len {}", begin, begin + len, seq_len_);
  DILATRON_CHECK(start >= 0 && start + seq_len_ + 1 <= split.size, "window {} of {}", start,
                 split.size);
  const uint16_t* w = split.data() + start + begin;
  for (int64_t i = 0; i < len; ++i) {
    inputs[i] = w[i];
    targets[i] = w[i + 1];
  }
}

std::vector<int32_t> encode_bytes(std::string_view text) {
  std::vector<int32_t> tokens(text.size());
  std::transform(text.begin(), text.end(), tokens.begin(),
                 [](char c) { return static_cast<int32_t>(static_cast<unsigned char>(c)); });
  return tokens;
}

std::string decode_bytes(const std::vector<int32_t>& tokens) {
  std::string text;
  text.reserve(tokens.size());
  for (int32_t t : tokens) {
    if (t >= 0 && t < 256) {
      text.push_back(static_cast<char>(t));
    } else {
      text += "<" + std::to_string(t) + ">";
    }
  }
  return text;
}

}  // namespace dilatron
