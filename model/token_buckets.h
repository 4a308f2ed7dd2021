// The counts of token_buckets' layout (layers_cuda.h), which the embedding backward's kernels
// (embedding.cu) read. Plain C++: included by .cu files too.
#pragma once

#include <cstdint>

namespace dilatron {

struct TokenBuckets {
  int32_t buckets = 0;       // U: distinct tokens
  int32_t segments = 0;      // segments of segment_rows positions, of the buckets longer than one
  int32_t segment_rows = 1;  // positions per segment (the last of a bucket may have fewer)
};

}  // namespace dilatron
