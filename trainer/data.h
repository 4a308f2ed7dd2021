// Training and validation tokens for the trainer: the byte-level text format and the
// llm.c / nanoGPT uint16 shard format, a seeded random window per global-batch sequence,
// and a fixed set of validation windows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dilatron {

// text: every byte is one token (vocab 256). tokens: the llm.c shard format (a 256-int32
// header: magic 20240520, version 1, token count; then `count` uint16 tokens).
enum class TokenFileFormat { text, tokens };

struct DataSpec {
  std::string path;
  TokenFileFormat format = TokenFileFormat::text;
  std::string val_path;       // same format; empty: split off the last val_fraction of `path`
  double val_fraction = 0.0;  // in [0, 1); 0 with no val_path means no validation split
  int seq_len = 0;
  int vocab_size = 0;
};

class TokenData {
 public:
  // Throws InputError naming the file and the fix on any problem with the file(s).
  static TokenData load(const DataSpec& spec);

  int64_t train_tokens() const { return train_.size; }
  int64_t val_tokens() const { return val_.size; }
  int seq_len() const { return seq_len_; }

  // Sequence j of the global batch at optimizer step `step`: a window of seq_len+1 training
  // tokens whose start depends only on (seed, step, j), so the data order is independent of
  // the world size and micro-batching. Writes positions [begin, begin+len) of the window:
  // inputs[i] = w[begin+i], targets[i] = w[begin+i+1].
  void train_sequence(uint64_t seed, int64_t step, int64_t j, int64_t begin, int64_t len,
                      int32_t* inputs, int32_t* targets) const;
  // Start (in the training split) of that window.
  int64_t train_window_start(uint64_t seed, int64_t step, int64_t j) const;

  // Non-overlapping seq_len+1 windows spread evenly over the validation split.
  int64_t num_val_sequences() const;
  void val_sequence(int64_t i, int64_t begin, int64_t len, int32_t* inputs, int32_t* targets) const;

 private:
  // A range of one loaded file; the training and validation splits of one file share it.
  struct Split {
    std::shared_ptr<const std::vector<uint16_t>> tokens;
    int64_t begin = 0, size = 0;
    const uint16_t* data() const { return tokens->data() + begin; }
  };

  void copy_window(const Split& split, int64_t start, int64_t begin, int64_t len, int32_t* inputs,
                   int32_t* targets) const;

  Split train_, val_;
  int seq_len_ = 0;
};

// The byte-level tokenizer of the text format.
std::vector<int32_t> encode_bytes(std::string_view text);
// Tokens outside [0, 256) are rendered as "<id>".
std::string decode_bytes(const std::vector<int32_t>& tokens);

}  // namespace dilatron
