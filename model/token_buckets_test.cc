// token_buckets' layout on the host: every invariant the embedding backward's kernels rely on,
// and the size bound GptCuda sizes its device and pinned buffers by, at its extremes (every
// token distinct: the most buckets; one token everywhere: the most segments).
#include "model/token_buckets.h"

#include <doctest/doctest.h>

#include <numeric>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"

namespace dilatron {
namespace {

// Builds the layout of `tokens` and checks it against them.
TokenBuckets check_layout(const std::vector<int32_t>& tokens, int V) {
  const auto N = static_cast<int64_t>(tokens.size());
  std::vector<int32_t> layout;
  const TokenBuckets counts = token_buckets(tokens.data(), N, V, layout);
  CAPTURE(N);
  REQUIRE(static_cast<int64_t>(layout.size()) == TokenBucketLayout<int32_t>::size(counts, N));
  CHECK(static_cast<int64_t>(layout.size()) <= token_bucket_layout_size(N));
  CHECK(counts.segments <= max_token_segments(N));
  const TokenBucketLayout<const int32_t> parts(layout.data(), counts, N);
  CHECK(parts.begin[0] == 0);
  CHECK(parts.begin[counts.buckets] == N);
  CHECK(parts.first_segment[0] == 0);
  CHECK(parts.first_segment[counts.buckets] == counts.segments);
  int64_t seen = 0;
  for (int32_t b = 0; b < counts.buckets; ++b) {
    CAPTURE(b);
    if (b > 0) CHECK(parts.token[b] > parts.token[b - 1]);
    const int32_t size = parts.begin[b + 1] - parts.begin[b];
    REQUIRE(size > 0);
    for (int32_t i = parts.begin[b]; i < parts.begin[b + 1]; ++i) {
      CHECK(tokens[static_cast<size_t>(parts.positions[i])] == parts.token[b]);
      if (i > parts.begin[b]) CHECK(parts.positions[i] > parts.positions[i - 1]);
    }
    const int32_t segments = parts.first_segment[b + 1] - parts.first_segment[b];
    CHECK(segments == (size > counts.segment_rows ? (size + counts.segment_rows - 1) / counts.segment_rows : 0));
    for (int32_t s = parts.first_segment[b]; s < parts.first_segment[b + 1]; ++s) CHECK(parts.segment_bucket[s] == b);
    seen += size;
  }
  CHECK(seen == N);
  return counts;
}

TEST_CASE("every token distinct: the most buckets, within token_bucket_layout_size") {
  for (int64_t N : {1, 7, 1000, 16384}) {
    std::vector<int32_t> tokens(static_cast<size_t>(N));
    std::iota(tokens.rbegin(), tokens.rend(), 0);  // N distinct tokens, in decreasing order
    const TokenBuckets counts = check_layout(tokens, static_cast<int>(N));
    CHECK(counts.buckets == N);
    CHECK(counts.segments == 0);
  }
}

TEST_CASE("one token everywhere: the most segments, within max_token_segments") {
  for (int64_t N : {33, 1000, 100000, 5000000}) {
    const std::vector<int32_t> tokens(static_cast<size_t>(N), 3);
    const TokenBuckets counts = check_layout(tokens, 50304);
    CHECK(counts.buckets == 1);
    CHECK(counts.segments > 1);
  }
}

TEST_CASE("skewed random tokens: short and segmented buckets side by side") {
  for (int64_t N : {1, 64, 4097, 65536}) {
    CounterRng rng(static_cast<uint64_t>(N), 0);
    std::vector<int32_t> tokens(static_cast<size_t>(N));
    for (int32_t& t : tokens) t = rng.below(2) == 0 ? 32 : static_cast<int32_t>(rng.below(256));
    check_layout(tokens, 256);
  }
}

TEST_CASE("a token outside the vocabulary is refused, naming it") {
  const std::vector<int32_t> tokens = {1, 2, 7};
  std::vector<int32_t> layout;
  CHECK_THROWS_WITH_AS(token_buckets(tokens.data(), 3, 5, layout), doctest::Contains("token 7 at position 2"), Error);
}

}  // namespace
}  // namespace dilatron
