// The N positions of a micro-batch grouped by token, for a reproducible token-embedding backward:
// token_buckets builds the layout on the host (where the tokens come from) by a counting sort;
// the caller copies it to the device beside the tokens, and the embedding backward's kernels
// (embedding.cu) read it through TokenBucketLayout. Plain C++: included by .cu files too.
#pragma once

#include <cstdint>
#include <vector>

namespace dilatron {

struct TokenBuckets {
  int32_t buckets = 0;       // U: distinct tokens
  int32_t segments = 0;      // segments of segment_rows positions, of the buckets longer than one
  int32_t segment_rows = 1;  // positions per segment (the last of a bucket may have fewer)
};

// The parts of a layout at `base` for N positions: Int is int32_t to fill it, const int32_t to
// read it.
template <typename Int>
struct TokenBucketLayout {
  Int* token;           // (U) in increasing order
  Int* begin;           // (U + 1) into positions
  Int* positions;       // (N), increasing within a bucket
  Int* first_segment;   // (U + 1) into the segments; equal neighbours: a short bucket
  Int* segment_bucket;  // (segments)

  TokenBucketLayout(Int* base, const TokenBuckets& b, int64_t N)
      : token(base),
        begin(token + b.buckets),
        positions(begin + b.buckets + 1),
        first_segment(positions + N),
        segment_bucket(first_segment + b.buckets + 1) {}

  // Elements of the layout of `buckets` buckets and `segments` segments over N positions.
  static int64_t size(int64_t buckets, int64_t segments, int64_t N) { return 3 * buckets + 2 + N + segments; }
  static int64_t size(const TokenBuckets& b, int64_t N) { return size(b.buckets, b.segments, N); }
};

// layout := the parts of TokenBucketLayout for the U distinct tokens of tokens[0 .. N) in
// increasing order, positions increasing within a bucket. A bucket longer than segment_rows
// positions is cut into consecutive segments of segment_rows (the last may be shorter); a shorter
// bucket has none (its first segment equals the next bucket's). segment_rows depends on N only.
// Returns the counts. Throws for a token outside [0, V) or N >= 2^30.
TokenBuckets token_buckets(const int32_t* tokens, int64_t N, int V, std::vector<int32_t>& layout);
// The most segments N positions can have, whatever the tokens.
int64_t max_token_segments(int64_t N);
// The most elements a layout of N positions can have (N distinct tokens, the most segments):
// what a buffer that takes any micro-batch's layout must hold.
int64_t token_bucket_layout_size(int64_t N);

}  // namespace dilatron
