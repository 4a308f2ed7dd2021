// Timing device work the way METHOD.md asks: warm up, time each launch with CUDA events, take
// the median.
#pragma once

#ifdef DILATRON_CUDA
#include <algorithm>
#include <vector>

#include "core/cuda_check.h"

namespace dilatron {

// Median of `reps` event-timed launches after `warmup` untimed ones, in milliseconds.
template <typename Launch>
double median_ms(Launch launch, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) launch();
  cudaEvent_t start, stop;
  DILATRON_CUDA_CHECK(cudaEventCreate(&start));
  DILATRON_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    DILATRON_CUDA_CHECK(cudaEventRecord(start));
    launch();
    DILATRON_CUDA_CHECK(cudaEventRecord(stop));
    DILATRON_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    DILATRON_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  DILATRON_CUDA_CHECK(cudaEventDestroy(start));
  DILATRON_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace dilatron
#endif
