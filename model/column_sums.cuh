// Column sums over the N rows of (N, C) matrices on the GPU, deterministic (fixed summation
// order, no atomics) and spread over the whole GPU. The linear layers' bias gradient (sum of
// dout) and the norms' parameter gradients (sums of xhat * dout and of dout) are such sums; one
// launch computes Terms::kCount of them side by side. Two stages:
//   1. a grid of column tiles x row splits: each block sums its rows of one tile of columns,
//      each thread 16 bytes of a row at a time (kVec = 8 bf16 or 4 fp32 columns; kVec = 1 where C
//      or a pointer does not allow it), and writes its fp32 partial sums to
//      parts[term][split][C];
//   2. one thread per column adds the splits' partials in order and ADDS the total to the
//      term's output (a null output is skipped).
// The split count depends on N (and on the scratch the caller has) only, never on the GPU, so the
// same inputs give the same bits on any device. At N = 16384, C = 768 (bf16) stage 1 runs
// 3 x 128 blocks of 256 threads where one block per 32 columns would run 24.
// Device code only: include from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "model/cuda_math.cuh"

namespace dilatron::gpu::column_sums {

constexpr int kRowLanes = 8;          // threadIdx.y of stage 1: rows a block reads at once
constexpr int kMaxRowSplits = 128;    // about one block per SM and column tile on an H100
constexpr int kMinRowsPerSplit = 64;  // so the partials (4 bytes per column and term) stay a few % of the traffic
constexpr int kSumLanes = 32;         // threadIdx.y of stage 2: splits read at once per column

struct RowSplits {
  int count;
  int64_t rows;  // per split; the last one may have fewer
};

// At most max_splits splits (at least one), so that the partials fit the caller's scratch.
// (More splits, for more blocks at small C, measured slower on an H200: 512 splits of 32 rows
// took the LayerNorm parameter gradients at N = 16384, C = 768 from 0.0211 to 0.0266 ms.)
inline RowSplits row_splits(int64_t N, int64_t max_splits = kMaxRowSplits) {
  const int64_t cap = max_splits < 1 ? 1 : (max_splits < kMaxRowSplits ? max_splits : kMaxRowSplits);
  const int64_t wanted = (N + kMinRowsPerSplit - 1) / kMinRowsPerSplit;
  const int64_t count = wanted < 1 ? 1 : (wanted < cap ? wanted : cap);
  const int64_t rows = (N + count - 1) / count;
  return {static_cast<int>(rows > 0 ? (N + rows - 1) / rows : 1), rows > 0 ? rows : 1};
}

// Scratch floats the partials of `terms` sums over N rows of C columns take.
inline int64_t scratch_floats(int64_t N, int C, int terms) { return int64_t{terms} * row_splits(N).count * C; }

// Stage 1. Block (tile, split) owns columns [tile * 32 * kVec, +32 * kVec) of rows
// [split * rows_per_split, +rows_per_split); thread (x, y) owns kVec adjacent columns and rows
// y, y + kRowLanes, ... of that range, and calls terms.add(n, c0, acc) for each, which adds
// row n's kCount terms of columns c0 .. c0 + kVec - 1 to acc.
template <class Terms, int kVec>
__global__ void __launch_bounds__(kWarp * kRowLanes)
    partial_kernel(float* __restrict__ parts, Terms terms, int64_t N, int C, int64_t rows_per_split) {
  constexpr int kTile = kWarp * kVec;
  constexpr int kCount = Terms::kCount;
  __shared__ float lanes[kCount][kRowLanes][kTile];
  const int tile0 = blockIdx.x * kTile;
  const int c0 = tile0 + threadIdx.x * kVec;
  const int64_t begin = blockIdx.y * rows_per_split;
  const int64_t end = begin + rows_per_split < N ? begin + rows_per_split : N;
  float acc[kCount][kVec] = {};
  if (c0 < C) {
#pragma unroll 4
    for (int64_t n = begin + threadIdx.y; n < end; n += kRowLanes) terms.add(n, c0, acc);
  }
#pragma unroll
  for (int t = 0; t < kCount; ++t)
#pragma unroll
    for (int j = 0; j < kVec; ++j) lanes[t][threadIdx.y][threadIdx.x * kVec + j] = acc[t][j];
  __syncthreads();
  // Each (term, column) sums the row lanes 0, 1, ... in order.
  const int thread = threadIdx.y * kWarp + threadIdx.x;
  const int64_t splits = gridDim.y;
  for (int i = thread; i < kCount * kTile; i += kWarp * kRowLanes) {
    const int t = i / kTile, col = i % kTile;
    if (tile0 + col >= C) continue;
    float sum = 0;
    for (int k = 0; k < kRowLanes; ++k) sum += lanes[t][k][col];
    parts[(t * splits + blockIdx.y) * C + tile0 + col] = sum;
  }
}

template <int kCount>
struct Outputs {
  float* ptr[kCount];
};

// Stage 2. Thread (x, y) of block b sums the partials of column b * 32 + x over splits
// y, y + kSumLanes, ..., then lane 0 of the column adds the kSumLanes sums in order.
template <int kCount>
__global__ void __launch_bounds__(kWarp * kSumLanes)
    sum_kernel(Outputs<kCount> outputs, const float* __restrict__ parts, int splits, int C) {
  __shared__ float lanes[kCount][kSumLanes][kWarp + 1];
  const int c = blockIdx.x * kWarp + threadIdx.x;
#pragma unroll
  for (int t = 0; t < kCount; ++t) {
    float sum = 0;
    if (c < C && outputs.ptr[t] != nullptr) {
      const float* part = parts + static_cast<int64_t>(t) * splits * C;
#pragma unroll 4
      for (int s = threadIdx.y; s < splits; s += kSumLanes) sum += part[static_cast<int64_t>(s) * C + c];
    }
    lanes[t][threadIdx.y][threadIdx.x] = sum;
  }
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
#pragma unroll
  for (int t = 0; t < kCount; ++t) {
    if (outputs.ptr[t] == nullptr) continue;
    float sum = lanes[t][0][threadIdx.x];
    for (int k = 1; k < kSumLanes; ++k) sum += lanes[t][k][threadIdx.x];
    outputs.ptr[t][c] += sum;
  }
}

// outputs.ptr[t][c] += sum over n < N of term t of (n, c), through `scratch` (at least
// kCount * splits.count * C floats, unused by anything else until these kernels have run).
// kVec: kPack16 of the element type where the rows allow 16-byte loads, else 1.
template <int kVec, class Terms>
cudaError_t launch(Outputs<Terms::kCount> outputs, const Terms& terms, int64_t N, int C, RowSplits splits,
                   float* scratch, cudaStream_t stream) {
  const dim3 grid((C + kWarp * kVec - 1) / (kWarp * kVec), splits.count);
  partial_kernel<Terms, kVec><<<grid, dim3(kWarp, kRowLanes), 0, stream>>>(scratch, terms, N, C, splits.rows);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  sum_kernel<Terms::kCount>
      <<<(C + kWarp - 1) / kWarp, dim3(kWarp, kSumLanes), 0, stream>>>(outputs, scratch, splits.count, C);
  return cudaGetLastError();
}

}  // namespace dilatron::gpu::column_sums
