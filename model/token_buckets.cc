#include "model/token_buckets.h"

#include <algorithm>

#include "core/check.h"

namespace dilatron {
namespace {

// At most this many segments (2 N / segment_rows bounds them), so that their fp32 partials stay
// small at any N: 6 MiB at C = 768.
constexpr int64_t kMaxTokenSegments = 2048;
// At least this many positions per segment: enough rows for one block to be worth its launch.
constexpr int64_t kMinSegmentRows = 32;

int32_t segment_rows(int64_t N) {
  const int64_t spread = (2 * N + kMaxTokenSegments - 1) / kMaxTokenSegments;
  return static_cast<int32_t>(std::max(kMinSegmentRows, spread));
}

}  // namespace

// A bucket of s > segment_rows positions has ceil(s / segment_rows) < 2 s / segment_rows
// segments, so all of them together fewer than 2 N / segment_rows <= kMaxTokenSegments.
int64_t max_token_segments(int64_t N) { return std::min(2 * N / segment_rows(N) + 1, kMaxTokenSegments); }

int64_t token_bucket_layout_size(int64_t N) { return TokenBucketLayout<int32_t>::size(N, max_token_segments(N), N); }

TokenBuckets token_buckets(const int32_t* tokens, int64_t N, int V, std::vector<int32_t>& layout) {
  // Below 2^30, so that a segment's end (start + segment_rows) stays an int32 in the kernels.
  DILATRON_CHECK(N >= 0 && N < (int64_t{1} << 30) && V > 0, "bad shape N = {}, V = {}", N, V);
  std::vector<int32_t> count(static_cast<size_t>(V) + 1, 0);
  for (int64_t i = 0; i < N; ++i) {
    DILATRON_CHECK(tokens[i] >= 0 && tokens[i] < V, "token {} at position {} is outside [0, {})", tokens[i], i, V);
    ++count[static_cast<size_t>(tokens[i]) + 1];
  }
  TokenBuckets counts{.segment_rows = segment_rows(N)};
  // A bucket of `size` positions has none when it fits one segment.
  auto segments_of = [&](int32_t size) {
    return size > counts.segment_rows ? (size + counts.segment_rows - 1) / counts.segment_rows : 0;
  };
  for (int v = 0; v < V; ++v) {
    const int32_t size = count[static_cast<size_t>(v) + 1];
    counts.buckets += size > 0;
    counts.segments += segments_of(size);
  }
  for (int v = 0; v < V; ++v) count[static_cast<size_t>(v) + 1] += count[static_cast<size_t>(v)];  // starts
  layout.assign(static_cast<size_t>(TokenBucketLayout<int32_t>::size(counts, N)), 0);
  const TokenBucketLayout<int32_t> parts(layout.data(), counts, N);
  int32_t b = 0, segment = 0;
  for (int v = 0; v < V; ++v) {
    const int32_t begin = count[static_cast<size_t>(v)], size = count[static_cast<size_t>(v) + 1] - begin;
    if (size == 0) continue;
    parts.token[b] = v;
    parts.begin[b] = begin;
    parts.first_segment[b] = segment;
    for (int32_t k = 0; k < segments_of(size); ++k) parts.segment_bucket[segment++] = b;
    ++b;
  }
  parts.begin[counts.buckets] = static_cast<int32_t>(N);
  parts.first_segment[counts.buckets] = segment;
  for (int64_t i = 0; i < N; ++i)
    parts.positions[count[static_cast<size_t>(tokens[i])]++] = static_cast<int32_t>(i);
  return counts;
}

}  // namespace dilatron
