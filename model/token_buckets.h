// token_buckets' layout (layers_cuda.h): its counts, and where each part starts, for the host
// code that fills it and the embedding backward's kernels (embedding.cu) that read it. Plain
// C++: included by .cu files too.
#pragma once

#include <cstdint>

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

  static int64_t size(const TokenBuckets& b, int64_t N) { return 3 * int64_t{b.buckets} + 2 + N + b.segments; }
};

}  // namespace dilatron
