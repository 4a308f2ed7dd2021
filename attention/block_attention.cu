// Kernels of attention/block_attention_cuda.h: flash attention over batched block tasks. bf16
// inputs at D = 64 and D = 128 run on the tensor cores (attention/block_attention_mma.cuh); every
// other case (T = float, other D) runs the fp32 SIMT kernels below.
//
// The fp32 kernels:
// Every kernel uses 256 threads as a 16 x 16 grid (ty, tx) over a 64 x 64 tile: thread (ty, tx)
// owns tile rows ty + 16 i and columns tx + 16 j (i, j < 4), and rows ty + 16 i times head-dim
// columns tx + 16 c (c < DMAX / 16) of the output accumulators. The 16 threads of a row are one
// half-warp, so row max and sum reduce with four xor-shuffles. Tiles live in shared memory as fp32
// rows padded to DMAX + 1 floats (the padding spreads a column read across all banks); columns
// D..DMAX-1 and rows past a block's end are zero, so the inner loops have fixed bounds.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "attention/block_attention_cuda.h"
#include "attention/block_attention_mma.cuh"
#include "core/device_type.h"

namespace dilatron {
namespace {

using block_attention_device::key_end;
using block_attention_device::load_float;
using block_attention_device::sees;
using block_attention_device::store_float;
namespace mma = block_attention_device::mma;

constexpr int kTile = block_attention_device::kTileRows;
constexpr int kSide = 16;                 // threads per tile side
constexpr int kThreads = kSide * kSide;   // 256
constexpr int kPer = kTile / kSide;       // tile rows (and columns) per thread
constexpr int kScoreRow = kTile + 1;      // padded row of a 64 x 64 score tile
constexpr int kMaxGridY = 65535;

// Sum / max over the 16 lanes of a half-warp (one tile row).
__device__ __forceinline__ float row_sum(float x) {
  for (int offset = kSide / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ __forceinline__ float row_max(float x) {
  for (int offset = kSide / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// tile (kTile, DMAX + 1) := rows [row0, row0 + kTile) of a block (element (r, d) at base[r * stride + d]),
// times mul; zero past `rows` and for d >= D.
template <int DMAX, typename T>
__device__ void load_rows(float* tile, const T* base, int64_t stride, int row0, int rows, int D, float mul) {
  for (int e = threadIdx.x; e < kTile * DMAX; e += kThreads) {
    const int r = e / DMAX, d = e % DMAX;
    float x = 0.0f;
    if (row0 + r < rows && d < D) x = load_float(base + static_cast<int64_t>(row0 + r) * stride + d) * mul;
    tile[r * (DMAX + 1) + d] = x;
  }
}

// lse_tile, delta_tile (kTile) := the rows [row0, row0 + kTile) of a task; -inf / 0 past nq, so
// padding rows get probability 0.
__device__ void load_row_stats(float* lse_tile, float* delta_tile, const float* lse, const float* delta,
                               const DeviceBlockTask& task, int row0) {
  for (int t = threadIdx.x; t < kTile; t += kThreads) {
    const int r = row0 + t;
    const int64_t at = task.lse_offset + static_cast<int64_t>(r) * task.lse_stride;
    lse_tile[t] = r < task.nq ? lse[at] : -INFINITY;
    delta_tile[t] = r < task.nq ? delta[at] : 0.0f;
  }
}

// p = exp(s - lse), 0 where masked or where the row saw no key at all (lse = -inf).
__device__ __forceinline__ float probability(float s, float lse, bool visible) {
  return visible && lse != -INFINITY ? expf(s - lse) : 0.0f;
}

// acc[i][j] += sum_d a[(ty + 16 i), d] * b[(tx + 16 j), d] over two (kTile, DMAX + 1) tiles.
template <int DMAX>
__device__ __forceinline__ void tile_dot(float (&acc)[kPer][kPer], const float* a, const float* b, int ty, int tx) {
  constexpr int kRow = DMAX + 1;
#pragma unroll 4
  for (int d = 0; d < DMAX; ++d) {
    float x[kPer], y[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) x[i] = a[(ty + kSide * i) * kRow + d];
#pragma unroll
    for (int j = 0; j < kPer; ++j) y[j] = b[(tx + kSide * j) * kRow + d];
#pragma unroll
    for (int i = 0; i < kPer; ++i)
#pragma unroll
      for (int j = 0; j < kPer; ++j) acc[i][j] = fmaf(x[i], y[j], acc[i][j]);
  }
}

// acc[i][c] += sum_m w[(ty + 16 i), m] * rows[m, tx + 16 c]: a (kTile, kTile) weight tile (row
// stride kScoreRow) times a (kTile, DMAX + 1) row tile.
template <int DMAX>
__device__ __forceinline__ void tile_weighted_rows(float (&acc)[kPer][DMAX / kSide], const float* w,
                                                   const float* rows, int ty, int tx) {
  constexpr int kRow = DMAX + 1;
#pragma unroll 4
  for (int m = 0; m < kTile; ++m) {
    float x[kPer], y[DMAX / kSide];
#pragma unroll
    for (int i = 0; i < kPer; ++i) x[i] = w[(ty + kSide * i) * kScoreRow + m];
#pragma unroll
    for (int c = 0; c < DMAX / kSide; ++c) y[c] = rows[m * kRow + tx + kSide * c];
#pragma unroll
    for (int i = 0; i < kPer; ++i)
#pragma unroll
      for (int c = 0; c < DMAX / kSide; ++c) acc[i][c] = fmaf(x[i], y[c], acc[i][c]);
  }
}

// Row `row` of a gradient output: := or += mul * acc over the thread's columns below D.
template <int DMAX, typename O>
__device__ __forceinline__ void store_row(O* row, const float (&acc)[DMAX / kSide], float mul, int D, int tx,
                                          bool accumulate) {
#pragma unroll
  for (int c = 0; c < DMAX / kSide; ++c) {
    const int d = tx + kSide * c;
    if (d >= D) continue;
    const float x = mul * acc[c];
    store_float(row + d, accumulate ? load_float(row + d) + x : x);
  }
}

template <int DMAX, typename T, typename O>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(O* out, float* lse, const T* q, const T* k, const T* v, const DeviceBlockTask* tasks, int D,
                   float scale, bool causal, float out_scale, bool merge) {
  constexpr int kRow = DMAX + 1, kCols = DMAX / kSide;
  const DeviceBlockTask task = tasks[blockIdx.x];
  // Highest query tiles first: under a causal mask they see the most keys.
  const int tile = gridDim.y - 1 - blockIdx.y;
  if (tile * kTile >= task.nq) return;
  const int q0 = tile * kTile;
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;

  extern __shared__ float smem[];
  float* q_tile = smem;                    // (kTile, kRow), pre-scaled by `scale`
  float* k_tile = q_tile + kTile * kRow;   // (kTile, kRow)
  float* v_tile = k_tile + kTile * kRow;   // (kTile, kRow)
  float* p_tile = v_tile + kTile * kRow;   // (kTile, kScoreRow)

  load_rows<DMAX>(q_tile, q + task.q_offset, task.q_stride, q0, task.nq, D, scale);
  float m[kPer], l[kPer], acc[kPer][kCols];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[i][c] = 0.0f;
  }

  const int keys = key_end(task, q0, causal);
  for (int k0 = 0; k0 < keys; k0 += kTile) {
    __syncthreads();  // the previous tile's k, v and p are no longer read
    load_rows<DMAX>(k_tile, k + task.k_offset, task.k_stride, k0, task.nk, D, 1.0f);
    load_rows<DMAX>(v_tile, v + task.k_offset, task.k_stride, k0, task.nk, D, 1.0f);
    __syncthreads();
    float s[kPer][kPer] = {};
    tile_dot<DMAX>(s, q_tile, k_tile, ty, tx);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int qi = q0 + ty + kSide * i;
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        if (!sees(qi, k0 + tx + kSide * j, task.nk, causal)) s[i][j] = -INFINITY;
        tile_max = fmaxf(tile_max, s[i][j]);
      }
      const float m_new = fmaxf(m[i], row_max(tile_max));
      // While a row has seen no key, m stays -inf and exp(-inf - -inf) would be NaN.
      const float alpha = m_new == -INFINITY ? 1.0f : expf(m[i] - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        s[i][j] = m_new == -INFINITY ? 0.0f : expf(s[i][j] - m_new);
        sum += s[i][j];
        p_tile[(ty + kSide * i) * kScoreRow + tx + kSide * j] = s[i][j];
      }
      l[i] = l[i] * alpha + row_sum(sum);
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[i][c] *= alpha;
    }
    __syncthreads();
    tile_weighted_rows<DMAX>(acc, p_tile, v_tile, ty, tx);
  }

  // Every thread reads the old lse of its rows before any thread of the row writes the new one.
  float old_lse[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int qi = q0 + ty + kSide * i;
    old_lse[i] = merge && qi < task.nq ? lse[task.lse_offset + static_cast<int64_t>(qi) * task.lse_stride]
                                       : -INFINITY;
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int qi = q0 + ty + kSide * i;
    if (qi >= task.nq) continue;
    O* row = out + task.q_offset + static_cast<int64_t>(qi) * task.q_stride;
    float* row_lse = lse + task.lse_offset + static_cast<int64_t>(qi) * task.lse_stride;
    // l >= 1 once a key was seen (the max contributes exp(0)).
    const float new_lse = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    const float inv_l = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    float keep = 0.0f, take = inv_l * out_scale, merged = new_lse;
    if (merge) {
      if (new_lse == -INFINITY) continue;  // this launch saw no key for the row: (out, lse) stand
      if (old_lse[i] != -INFINITY) {
        const float hi = fmaxf(old_lse[i], new_lse);
        merged = hi + log1pf(expf(fminf(old_lse[i], new_lse) - hi));
        keep = expf(old_lse[i] - merged);
        take *= expf(new_lse - merged);
      }
    }
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int d = tx + kSide * c;
      if (d >= D) continue;
      const float before = keep == 0.0f ? 0.0f : load_float(row + d) * keep;
      store_float(row + d, before + acc[i][c] * take);
    }
    if (tx == 0) *row_lse = merged;
  }
}

template <int DMAX, typename T, typename O>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(O* dk, O* dv, const T* dout, const float* delta, const float* lse, const T* q, const T* k,
                const T* v, const DeviceBlockTask* tasks, int D, float scale, bool causal, float dout_scale,
                bool accumulate) {
  constexpr int kRow = DMAX + 1, kCols = DMAX / kSide;
  const DeviceBlockTask task = tasks[blockIdx.x];
  const int tile = blockIdx.y;  // lowest key tiles first: under a causal mask most queries see them
  if (tile * kTile >= task.nk) return;
  const int k0 = tile * kTile;
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;

  extern __shared__ float smem[];
  float* k_tile = smem;                        // (kTile, kRow)
  float* v_tile = k_tile + kTile * kRow;       // (kTile, kRow)
  float* q_tile = v_tile + kTile * kRow;       // (kTile, kRow)
  float* dout_tile = q_tile + kTile * kRow;    // (kTile, kRow), times dout_scale
  float* pt_tile = dout_tile + kTile * kRow;   // (kTile keys, kScoreRow): P transposed
  float* dst_tile = pt_tile + kTile * kScoreRow;  // (kTile keys, kScoreRow): dS transposed
  float* lse_tile = dst_tile + kTile * kScoreRow;  // (kTile)
  float* delta_tile = lse_tile + kTile;            // (kTile)

  load_rows<DMAX>(k_tile, k + task.k_offset, task.k_stride, k0, task.nk, D, 1.0f);
  load_rows<DMAX>(v_tile, v + task.k_offset, task.k_stride, k0, task.nk, D, 1.0f);
  float dk_acc[kPer][kCols], dv_acc[kPer][kCols];
#pragma unroll
  for (int i = 0; i < kPer; ++i)
#pragma unroll
    for (int c = 0; c < kCols; ++c) dk_acc[i][c] = dv_acc[i][c] = 0.0f;

  // Causal: queries before k0 see none of these keys (aligned blocks, equal tiles).
  for (int q0 = causal ? k0 : 0; q0 < task.nq; q0 += kTile) {
    __syncthreads();  // the previous query tile is no longer read
    load_rows<DMAX>(q_tile, q + task.q_offset, task.q_stride, q0, task.nq, D, 1.0f);
    load_rows<DMAX>(dout_tile, dout + task.q_offset, task.q_stride, q0, task.nq, D, dout_scale);
    load_row_stats(lse_tile, delta_tile, lse, delta, task, q0);
    __syncthreads();
    // Here thread rows are keys (ty + 16 i) and columns are queries (tx + 16 j).
    float s[kPer][kPer] = {}, dp[kPer][kPer] = {};
    tile_dot<DMAX>(s, k_tile, q_tile, ty, tx);
    tile_dot<DMAX>(dp, v_tile, dout_tile, ty, tx);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int kj = k0 + ty + kSide * i;
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const int r = tx + kSide * j;
        const bool visible = q0 + r < task.nq && sees(q0 + r, kj, task.nk, causal);
        const float p = probability(s[i][j] * scale, lse_tile[r], visible);
        pt_tile[(ty + kSide * i) * kScoreRow + r] = p;
        dst_tile[(ty + kSide * i) * kScoreRow + r] = p * (dp[i][j] - delta_tile[r]);
      }
    }
    __syncthreads();
    tile_weighted_rows<DMAX>(dv_acc, pt_tile, dout_tile, ty, tx);
    tile_weighted_rows<DMAX>(dk_acc, dst_tile, q_tile, ty, tx);
  }

#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int kj = k0 + ty + kSide * i;
    if (kj >= task.nk) continue;
    const int64_t at = task.k_offset + static_cast<int64_t>(kj) * task.k_stride;
    store_row<DMAX>(dk + at, dk_acc[i], scale, D, tx, accumulate);
    store_row<DMAX>(dv + at, dv_acc[i], 1.0f, D, tx, accumulate);
  }
}

template <int DMAX, typename T, typename O>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(O* dq, const T* dout, const float* delta, const float* lse, const T* q, const T* k, const T* v,
              const DeviceBlockTask* tasks, int D, float scale, bool causal, float dout_scale, bool accumulate) {
  constexpr int kRow = DMAX + 1, kCols = DMAX / kSide;
  const DeviceBlockTask task = tasks[blockIdx.x];
  const int tile = gridDim.y - 1 - blockIdx.y;  // highest query tiles first (most keys when causal)
  if (tile * kTile >= task.nq) return;
  const int q0 = tile * kTile;
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;

  extern __shared__ float smem[];
  float* q_tile = smem;                         // (kTile, kRow)
  float* dout_tile = q_tile + kTile * kRow;     // (kTile, kRow), times dout_scale
  float* k_tile = dout_tile + kTile * kRow;     // (kTile, kRow)
  float* v_tile = k_tile + kTile * kRow;        // (kTile, kRow)
  float* ds_tile = v_tile + kTile * kRow;       // (kTile queries, kScoreRow)
  float* lse_tile = ds_tile + kTile * kScoreRow;  // (kTile)
  float* delta_tile = lse_tile + kTile;           // (kTile)

  load_rows<DMAX>(q_tile, q + task.q_offset, task.q_stride, q0, task.nq, D, 1.0f);
  load_rows<DMAX>(dout_tile, dout + task.q_offset, task.q_stride, q0, task.nq, D, dout_scale);
  load_row_stats(lse_tile, delta_tile, lse, delta, task, q0);
  float dq_acc[kPer][kCols];
#pragma unroll
  for (int i = 0; i < kPer; ++i)
#pragma unroll
    for (int c = 0; c < kCols; ++c) dq_acc[i][c] = 0.0f;

  const int keys = key_end(task, q0, causal);
  for (int k0 = 0; k0 < keys; k0 += kTile) {
    __syncthreads();  // the previous key tile and dS are no longer read
    load_rows<DMAX>(k_tile, k + task.k_offset, task.k_stride, k0, task.nk, D, 1.0f);
    load_rows<DMAX>(v_tile, v + task.k_offset, task.k_stride, k0, task.nk, D, 1.0f);
    __syncthreads();
    // Thread rows are queries (ty + 16 i), columns keys (tx + 16 j).
    float s[kPer][kPer] = {}, dp[kPer][kPer] = {};
    tile_dot<DMAX>(s, q_tile, k_tile, ty, tx);
    tile_dot<DMAX>(dp, dout_tile, v_tile, ty, tx);
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int r = ty + kSide * i;
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const int kj = k0 + tx + kSide * j;
        const bool visible = q0 + r < task.nq && sees(q0 + r, kj, task.nk, causal);
        const float p = probability(s[i][j] * scale, lse_tile[r], visible);
        ds_tile[r * kScoreRow + tx + kSide * j] = p * (dp[i][j] - delta_tile[r]);
      }
    }
    __syncthreads();
    tile_weighted_rows<DMAX>(dq_acc, ds_tile, k_tile, ty, tx);
  }

#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int qi = q0 + ty + kSide * i;
    if (qi >= task.nq) continue;
    store_row<DMAX>(dq + task.q_offset + static_cast<int64_t>(qi) * task.q_stride, dq_acc[i], scale, D, tx,
                    accumulate);
  }
}

// One warp per (b, position, head) row of (B, n, H, D); delta is (B, H, n).
template <typename T>
__global__ void row_delta_kernel(float* delta, const T* dout, const T* out, int64_t rows, int64_t n, int H, int D) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += warps) {
    const T* a = dout + row * D;
    const T* b = out + row * D;
    float sum = 0.0f;
    for (int d = lane; d < D; d += 32) sum = fmaf(load_float(a + d), load_float(b + d), sum);
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    const int64_t bn = row / H, h = row % H;  // bn = b * n + position
    if (lane == 0) delta[(bn / n * H + h) * n + bn % n] = sum;
  }
}

__global__ void fill_kernel(float* x, float value, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = value;
}

template <typename T>
__global__ void convert_kernel(T* out, const float* in, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_float(out + i, in[i]);
}

int elementwise_blocks(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < (1 << 16) ? blocks : (1 << 16));
}

// Shared memory of each kernel, in floats.
constexpr int forward_smem(int dmax) { return 3 * kTile * (dmax + 1) + kTile * kScoreRow; }
constexpr int dkdv_smem(int dmax) { return 4 * kTile * (dmax + 1) + 2 * kTile * kScoreRow + 2 * kTile; }
constexpr int dq_smem(int dmax) { return 4 * kTile * (dmax + 1) + kTile * kScoreRow + 2 * kTile; }

// The grid of a batch whose CTAs walk `rows` (max_nq or max_nk) in tiles; false if it cannot be
// launched (no task, more rows than grid.y holds, D out of range).
bool grid_for(const BlockAttentionBatch& batch, int rows, dim3& grid) {
  const int64_t tiles = (static_cast<int64_t>(rows) + kTile - 1) / kTile;
  if (batch.num_tasks > 0x7fffffff || tiles > kMaxGridY) return false;
  grid = dim3(static_cast<unsigned>(batch.num_tasks), static_cast<unsigned>(tiles));
  return true;
}

bool valid(const BlockAttentionBatch& batch) {
  return batch.D >= 1 && batch.D <= kMaxBlockAttentionHeadDim && batch.max_nq >= 0 && batch.max_nk >= 0 &&
         batch.num_tasks >= 0;
}

// Runs launch.template operator()<DMAX>() for the smallest of 32, 64, 128 that holds D.
template <typename Launch>
cudaError_t with_head_dim(int D, Launch&& launch) {
  if (D <= 32) return launch.template operator()<32>();
  if (D <= 64) return launch.template operator()<64>();
  return launch.template operator()<128>();
}

// The tensor-core kernels take bf16 inputs at D = 64 and 128; launch.template operator()<D>() runs one.
bool tensor_core_head_dim(int D) { return D == 64 || D == 128; }
template <typename Launch>
cudaError_t with_tensor_core_head_dim(int D, Launch&& launch) {
  return D == 64 ? launch.template operator()<64>() : launch.template operator()<128>();
}

template <typename Kernel, typename... Args>
cudaError_t launch_tiles(Kernel kernel, dim3 grid, int threads, int smem_bytes, cudaStream_t stream, Args... args) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  if (err != cudaSuccess) return err;
  kernel<<<grid, threads, smem_bytes, stream>>>(args...);
  return cudaGetLastError();
}

// Whether a batch's dS tiles are kept as a lower triangle (mma::DsTiles): causal, square.
bool ds_triangular(const BlockAttentionBatch& batch) {
  return batch.mask == BlockMask::causal && batch.max_nq == batch.max_nk;
}

// The bf16 dS elements one task of the batch keeps (mma::DsTiles); 0 where it keeps none.
int64_t ds_elements_per_task(const BlockAttentionBatch& batch) {
  if (!tensor_core_head_dim(batch.D)) return 0;
  const int64_t q_tiles = (batch.max_nq + kTile - 1) / kTile, k_tiles = (batch.max_nk + kTile - 1) / kTile;
  const int64_t tiles = ds_triangular(batch) ? q_tiles * (q_tiles + 1) / 2 : q_tiles * k_tiles;
  return tiles * kTile * kTile;
}

// Bytes of the fp32 kernels' shared memory.
constexpr int bytes(int floats) { return floats * static_cast<int>(sizeof(float)); }

}  // namespace

template <typename T, typename O>
cudaError_t launch_block_attention_forward(O* out, float* lse, const T* q, const T* k, const T* v,
                                           const BlockAttentionBatch& batch, float out_scale, bool merge,
                                           cudaStream_t stream) {
  if (!valid(batch)) return cudaErrorInvalidValue;
  if (batch.num_tasks == 0 || batch.max_nq == 0) return cudaSuccess;
  dim3 grid;
  if (!grid_for(batch, batch.max_nq, grid)) return cudaErrorInvalidValue;
  const bool causal = batch.mask == BlockMask::causal;
  if constexpr (std::is_same_v<T, bf16>) {
    if (tensor_core_head_dim(batch.D)) {
      return with_tensor_core_head_dim(batch.D, [&]<int D>() {
        return launch_tiles(mma::forward_kernel<D, device_type_t<O>>, grid, mma::kThreads, mma::forward_smem_bytes<D>(),
                            stream, device_ptr(out), lse, device_ptr(q), device_ptr(k), device_ptr(v), batch.tasks,
                            batch.scale, causal, out_scale, merge);
      });
    }
  }
  return with_head_dim(batch.D, [&]<int DMAX>() {
    return launch_tiles(forward_kernel<DMAX, device_type_t<T>, device_type_t<O>>, grid, kThreads,
                        bytes(forward_smem(DMAX)), stream, device_ptr(out), lse, device_ptr(q), device_ptr(k),
                        device_ptr(v), batch.tasks, batch.D, batch.scale, causal, out_scale, merge);
  });
}

template <typename T, typename O>
cudaError_t launch_block_attention_backward_dkdv(O* dk, O* dv, const T* dout, const float* delta, const float* lse,
                                                 const T* q, const T* k, const T* v,
                                                 const BlockAttentionBatch& batch, float dout_scale,
                                                 bool accumulate, cudaStream_t stream) {
  if (!valid(batch)) return cudaErrorInvalidValue;
  if (batch.num_tasks == 0 || batch.max_nk == 0) return cudaSuccess;
  dim3 grid;
  if (!grid_for(batch, batch.max_nk, grid)) return cudaErrorInvalidValue;
  const bool causal = batch.mask == BlockMask::causal;
  if constexpr (std::is_same_v<T, bf16>) {
    if (tensor_core_head_dim(batch.D)) {
      return with_tensor_core_head_dim(batch.D, [&]<int D>() {
        return launch_tiles(mma::dkdv_kernel<D, device_type_t<O>>, grid, mma::kThreads, mma::dkdv_smem_bytes<D>(),
                            stream, device_ptr(dk), device_ptr(dv), device_ptr(dout), delta, lse, device_ptr(q),
                            device_ptr(k), device_ptr(v), batch.tasks, batch.scale, causal, dout_scale, accumulate,
                            mma::DsTiles{});
      });
    }
  }
  return with_head_dim(batch.D, [&]<int DMAX>() {
    return launch_tiles(dkdv_kernel<DMAX, device_type_t<T>, device_type_t<O>>, grid, kThreads, bytes(dkdv_smem(DMAX)),
                        stream, device_ptr(dk), device_ptr(dv), device_ptr(dout), delta, lse, device_ptr(q),
                        device_ptr(k), device_ptr(v), batch.tasks, batch.D, batch.scale, causal, dout_scale,
                        accumulate);
  });
}

template <typename T, typename O>
cudaError_t launch_block_attention_backward_dq(O* dq, const T* dout, const float* delta, const float* lse,
                                               const T* q, const T* k, const T* v, const BlockAttentionBatch& batch,
                                               float dout_scale, bool accumulate, cudaStream_t stream) {
  if (!valid(batch)) return cudaErrorInvalidValue;
  if (batch.num_tasks == 0 || batch.max_nq == 0) return cudaSuccess;
  dim3 grid;
  if (!grid_for(batch, batch.max_nq, grid)) return cudaErrorInvalidValue;
  const bool causal = batch.mask == BlockMask::causal;
  if constexpr (std::is_same_v<T, bf16>) {
    if (tensor_core_head_dim(batch.D)) {
      return with_tensor_core_head_dim(batch.D, [&]<int D>() {
        return launch_tiles(mma::dq_kernel<D, device_type_t<O>>, grid, mma::kThreads, mma::dq_smem_bytes<D>(), stream,
                            device_ptr(dq), device_ptr(dout), delta, lse, device_ptr(q), device_ptr(k), device_ptr(v),
                            batch.tasks, batch.scale, causal, dout_scale, accumulate);
      });
    }
  }
  return with_head_dim(batch.D, [&]<int DMAX>() {
    return launch_tiles(dq_kernel<DMAX, device_type_t<T>, device_type_t<O>>, grid, kThreads, bytes(dq_smem(DMAX)),
                        stream, device_ptr(dq), device_ptr(dout), delta, lse, device_ptr(q), device_ptr(k),
                        device_ptr(v), batch.tasks, batch.D, batch.scale, causal, dout_scale, accumulate);
  });
}

int64_t block_attention_ds_scratch_elements(const std::vector<BlockAttentionBatch>& batches, int64_t cap_bytes) {
  int64_t wanted = 0;
  for (const BlockAttentionBatch& batch : batches)
    wanted = std::max(wanted, ds_elements_per_task(batch) * batch.num_tasks);
  return std::min(wanted, cap_bytes / static_cast<int64_t>(sizeof(bf16)));
}

template <typename T, typename O>
cudaError_t launch_block_attention_backward(O* dq, O* dk, O* dv, const T* dout, const float* delta, const float* lse,
                                            const T* q, const T* k, const T* v, const BlockAttentionBatch& batch,
                                            float dout_scale, bool accumulate, bf16* ds_scratch,
                                            int64_t ds_scratch_elements, cudaStream_t stream) {
  const int64_t per_task = ds_elements_per_task(batch);
  const int64_t chunk = per_task > 0 && ds_scratch != nullptr ? ds_scratch_elements / per_task : 0;
  if (!std::is_same_v<T, bf16> || chunk == 0 || !valid(batch)) {
    if (cudaError_t err = launch_block_attention_backward_dkdv(dk, dv, dout, delta, lse, q, k, v, batch, dout_scale,
                                                               accumulate, stream);
        err != cudaSuccess)
      return err;
    return launch_block_attention_backward_dq(dq, dout, delta, lse, q, k, v, batch, dout_scale, accumulate, stream);
  }
  if constexpr (std::is_same_v<T, bf16>) {
    if (batch.num_tasks == 0 || batch.max_nq == 0 || batch.max_nk == 0) return cudaSuccess;
    const bool causal = batch.mask == BlockMask::causal;
    const mma::DsTiles ds{device_ptr(ds_scratch), (batch.max_nq + kTile - 1) / kTile,
                          (batch.max_nk + kTile - 1) / kTile, ds_triangular(batch)};
    // Tasks in chunks whose dS fits the scratch: dK/dV (keeping dS), then dQ from it.
    for (int64_t first = 0; first < batch.num_tasks; first += chunk) {
      BlockAttentionBatch part = batch;
      part.tasks = batch.tasks + first;
      part.num_tasks = std::min(chunk, batch.num_tasks - first);
      dim3 key_grid, query_grid;
      if (!grid_for(part, part.max_nk, key_grid) || !grid_for(part, part.max_nq, query_grid))
        return cudaErrorInvalidValue;
      cudaError_t err = with_tensor_core_head_dim(batch.D, [&]<int D>() {
        return launch_tiles(mma::dkdv_kernel<D, device_type_t<O>>, key_grid, mma::kThreads, mma::dkdv_smem_bytes<D>(),
                            stream, device_ptr(dk), device_ptr(dv), device_ptr(dout), delta, lse, device_ptr(q),
                            device_ptr(k), device_ptr(v), part.tasks, batch.scale, causal, dout_scale, accumulate, ds);
      });
      if (err != cudaSuccess) return err;
      err = with_tensor_core_head_dim(batch.D, [&]<int D>() {
        return launch_tiles(mma::dq_from_ds_kernel<D, device_type_t<O>>, query_grid, mma::kThreads,
                            mma::dq_from_ds_smem_bytes<D>(), stream, device_ptr(dq), ds, device_ptr(k), part.tasks,
                            batch.scale, causal, accumulate);
      });
      if (err != cudaSuccess) return err;
    }
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t launch_attention_row_delta(float* delta, const T* dout, const T* out, int B, int64_t n, int H, int D,
                                       cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(B) * n * H;
  if (rows == 0) return cudaSuccess;
  row_delta_kernel<<<elementwise_blocks(rows * 32), kThreads, 0, stream>>>(delta, device_ptr(dout), device_ptr(out),
                                                                           rows, n, H, D);
  return cudaGetLastError();
}

cudaError_t launch_fill(float* x, float value, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  fill_kernel<<<elementwise_blocks(count), kThreads, 0, stream>>>(x, value, count);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_convert_from_float(T* out, const float* in, int64_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  convert_kernel<<<elementwise_blocks(count), kThreads, 0, stream>>>(device_ptr(out), in, count);
  return cudaGetLastError();
}

#define DILATRON_INSTANTIATE_BLOCK_ATTENTION_CUDA(T, O)                                                           \
  template cudaError_t launch_block_attention_forward<T, O>(O*, float*, const T*, const T*, const T*,            \
                                                            const BlockAttentionBatch&, float, bool,              \
                                                            cudaStream_t);                                        \
  template cudaError_t launch_block_attention_backward_dkdv<T, O>(O*, O*, const T*, const float*, const float*,  \
                                                                  const T*, const T*, const T*,                   \
                                                                  const BlockAttentionBatch&, float, bool,        \
                                                                  cudaStream_t);                                  \
  template cudaError_t launch_block_attention_backward_dq<T, O>(O*, const T*, const float*, const float*,        \
                                                                const T*, const T*, const T*,                     \
                                                                const BlockAttentionBatch&, float, bool,          \
                                                                cudaStream_t);                                    \
  template cudaError_t launch_block_attention_backward<T, O>(O*, O*, O*, const T*, const float*, const float*,   \
                                                             const T*, const T*, const T*,                        \
                                                             const BlockAttentionBatch&, float, bool, bf16*,      \
                                                             int64_t, cudaStream_t);

DILATRON_INSTANTIATE_BLOCK_ATTENTION_CUDA(float, float)
DILATRON_INSTANTIATE_BLOCK_ATTENTION_CUDA(bf16, bf16)
DILATRON_INSTANTIATE_BLOCK_ATTENTION_CUDA(bf16, float)

template cudaError_t launch_attention_row_delta<float>(float*, const float*, const float*, int, int64_t, int, int,
                                                       cudaStream_t);
template cudaError_t launch_attention_row_delta<bf16>(float*, const bf16*, const bf16*, int, int64_t, int, int,
                                                      cudaStream_t);
template cudaError_t launch_convert_from_float<bf16>(bf16*, const float*, int64_t, cudaStream_t);
template cudaError_t launch_convert_from_float<float>(float*, const float*, int64_t, cudaStream_t);

}  // namespace dilatron
