// Device code of attention/block_attention.cu shared by its two paths, and the tensor-core path:
// the forward, dK/dV and dQ kernels for bf16 inputs at D = 64 and D = 128, with every product on
// mma.sync m16n8k16 (bf16 operands, fp32 accumulation). Tasks, masks, merge, scales and outputs
// are those of block_attention_cuda.h, exactly as in the fp32 kernels; softmax, lse, delta and the
// accumulators stay fp32. The one difference: P and dS are rounded to bf16 before they multiply
// V, dO, K and Q (as FlashAttention does), a relative error of 2^-9 per weight that averages out
// in the sums (the row sums l of the forward are taken before the rounding, so lse is exact fp32).
//
// A CTA is 4 warps (128 threads) over a 64-row tile of its own rows (queries in the forward and dQ
// kernels, keys in the dK/dV kernel); warp w owns tile rows [16 w, 16 w + 16). Tiles are bf16 rows
// in shared memory padded to D + 8 elements: the 8 rows an ldmatrix reads then start 16 bytes
// apart modulo 128, in distinct banks. Rows past a block's end are zero (never NaN: 0 * NaN would
// poison a product even where the probability is 0).
//
// Each kernel keeps its own tiles (q in the forward; q and dout in dQ; k and v in dK/dV) and
// streams the other side through two shared-memory stages: cp.async fills the next stage while the
// tensor cores work on this one, so the load latency hides under the products. Only tiles that
// straddle a block's end or the causal diagonal evaluate the mask element by element.
//
// Fragments of mma.m16n8k16 (PTX ISA), with g = lane / 4 and t = lane % 4; each register holds two
// bf16, the lower column in the low half:
//   A (16 x 16, rows x k):  a0 (g, 2t..2t+1)  a1 (g+8, 2t..2t+1)  a2 (g, 2t+8..2t+9)  a3 (g+8, 2t+8..2t+9)
//   B (16 x 8, k x n):      b0 (k = 2t..2t+1, n = g)              b1 (k = 2t+8..2t+9, n = g)
//   C (16 x 8, fp32):       c0, c1 (g, 2t..2t+1)                  c2, c3 (g+8, 2t..2t+1)
// So the C fragments of two neighbouring 8-column tiles, packed to bf16 pairs, are the A fragment of
// their 16 columns: scores feed the next product without leaving registers.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "attention/block_attention_cuda.h"

namespace dilatron {
namespace block_attention_device {

// ---- Shared by the fp32 and the tensor-core kernels.

// Query rows and key rows of one tile (a CTA's rows; the grid's y counts these tiles).
constexpr int kTileRows = 64;

__device__ __forceinline__ float load_float(const float* p) { return *p; }
__device__ __forceinline__ float load_float(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_float(float* p, float x) { *p = x; }
__device__ __forceinline__ void store_float(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

// Query row i sees key j (causal blocks are aligned).
__device__ __forceinline__ bool sees(int i, int j, int nk, bool causal) { return j < nk && !(causal && j > i); }

// The last key any query of the tile [q0, q0 + kTileRows) sees, plus one.
__device__ __forceinline__ int key_end(const DeviceBlockTask& task, int q0, bool causal) {
  return causal ? min(task.nk, q0 + kTileRows) : task.nk;
}

// ---- The tensor-core path.

namespace mma {

using bf16_t = __nv_bfloat16;

constexpr int kTile = kTileRows;
constexpr int kWarps = kTile / 16;
constexpr int kThreads = 32 * kWarps;  // 128
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Elements per shared-memory row of a (kTile, D) tile.
template <int D>
constexpr int kRow = D + 8;
template <int D>
constexpr int kTileElements = kTile * kRow<D>;
template <int D>
constexpr int kTileBytes = kTileElements<D> * static_cast<int>(sizeof(bf16_t));

// Bytes of shared memory of each kernel: the tiles a CTA keeps (its own rows) once, the tiles it
// streams twice (two stages: one computed on while the copy engine fills the other).
template <int D>
constexpr int forward_smem_bytes() {
  return (1 + 2 * 2) * kTileBytes<D>;  // q; k and v per stage
}
template <int D>
constexpr int dq_smem_bytes() {
  return (2 + 2 * 2) * kTileBytes<D>;  // q, dout; k and v per stage
}
template <int D>
constexpr int dkdv_smem_bytes() {
  // k, v; q and dout per stage; lse and delta per stage
  return (2 + 2 * 2) * kTileBytes<D> + 2 * 2 * kTile * static_cast<int>(sizeof(float));
}

// Bytes of one 64 x 64 dS tile (DsTiles), unpadded.
constexpr int kDsTileBytes = kTile * kTile * static_cast<int>(sizeof(bf16_t));

template <int D>
constexpr int dq_from_ds_smem_bytes() {
  return 2 * (kDsTileBytes + kTileBytes<D>);  // dS and k per stage
}

// Where the dK/dV kernel leaves dS for the dQ kernel (launch_block_attention_backward): one
// 64 x 64 bf16 tile per (task, query tile, key tile) the mask lets through. Causal batches keep
// only the lower triangle (key tile <= query tile), which halves the scratch. base == nullptr: no
// dS is kept. A tile is stored in the order the dQ kernel consumes it, as mma A fragments: 16
// bytes per (query warp qw, 16-key chunk kc, lane), at uint4 index (4 qw + kc) 32 + lane, so each
// warp writes and reads 512 contiguous bytes (row-major 64 x 64 rows wrote 16-byte pieces that
// were half a 32-byte sector each).
struct DsTiles {
  bf16_t* base;
  int q_tiles, k_tiles;
  bool triangular;
  __device__ __forceinline__ bf16_t* tile(int64_t task, int q_tile, int k_tile) const {
    const int64_t per_task = triangular ? int64_t{q_tiles} * (q_tiles + 1) / 2 : int64_t{q_tiles} * k_tiles;
    const int64_t in_task =
        triangular ? int64_t{q_tile} * (q_tile + 1) / 2 + k_tile : int64_t{q_tile} * k_tiles + k_tile;
    return base + (task * per_task + in_task) * (kTile * kTile);
  }
};

// The CTA's dynamic shared memory.
__device__ __forceinline__ unsigned char* dynamic_shared_memory() {
  extern __shared__ __align__(16) unsigned char smem[];
  return smem;
}

// ---- Asynchronous copies (cp.async, sm_80+): global -> shared without passing through registers,
// so the next tile loads while the tensor cores work on this one. A copy whose source size is 0
// writes zeros (rows past a block's end).

__device__ __forceinline__ void copy_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(dst))),
               "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void copy_async_4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(dst))),
               "l"(src), "r"(valid ? 4 : 0)
               : "memory");
}
// Closes the group of copies this thread issued since the last commit.
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most `pending` of this thread's committed groups are still in flight; a barrier
// afterwards makes every thread's landed copies visible to the CTA.
template <int pending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

// tile := rows [row0, row0 + kTile) of a block (element (r, d) at base[r * stride + d]), zero past
// `rows`, by asynchronous 16-byte copies when every row starts 16-byte aligned; otherwise by
// element loads and stores, complete on return (the barrier after the wait publishes both).
template <int D>
__device__ __forceinline__ void load_tile_async(bf16_t* tile, const bf16_t* base, int64_t stride, int row0,
                                                int rows) {
  const int valid = min(kTile, rows - row0);
  if (reinterpret_cast<uintptr_t>(base) % 16 == 0 && stride % 8 == 0) {
    constexpr int kChunks = D / 8;  // 16-byte pieces of a row
#pragma unroll
    for (int i = 0; i < kTile * kChunks / kThreads; ++i) {
      const int e = static_cast<int>(threadIdx.x) + i * kThreads, r = e / kChunks, c = e % kChunks;
      const bool in = r < valid;
      copy_async_16(tile + r * kRow<D> + 8 * c, in ? base + static_cast<int64_t>(row0 + r) * stride + 8 * c : base, in);
    }
  } else {
    for (int e = static_cast<int>(threadIdx.x); e < kTile * D; e += kThreads) {
      const int r = e / D, d = e % D;
      tile[r * kRow<D> + d] =
          r < valid ? base[static_cast<int64_t>(row0 + r) * stride + d] : __float2bfloat16_rn(0.0f);
    }
  }
}

// x[r] := the fp32 value of row row0 + r (at base[row * stride]) for r < kTile, 0 past `rows`.
__device__ __forceinline__ void load_row_values_async(float* x, const float* base, int64_t stride, int row0,
                                                      int rows) {
  for (int r = static_cast<int>(threadIdx.x); r < kTile; r += kThreads) {
    const bool in = row0 + r < rows;
    copy_async_4(x + r, in ? base + static_cast<int64_t>(row0 + r) * stride : base, in);
  }
}

// The same rows of two blocks (k and v, or q and dout), one tile each, in two stages from `base`
// on: stage s holds first(s) then second(s).
template <int D>
struct StagedPair {
  bf16_t* base;
  __device__ __forceinline__ bf16_t* first(int stage) const { return base + 2 * stage * kTileElements<D>; }
  __device__ __forceinline__ bf16_t* second(int stage) const { return base + (2 * stage + 1) * kTileElements<D>; }
  // Starts the copies of rows [row0, row0 + kTile) of a and b (row r at offset + r * stride, zero
  // past `rows`) into `stage`.
  __device__ __forceinline__ void load(int stage, const bf16_t* a, const bf16_t* b, int64_t offset, int64_t stride,
                                       int row0, int rows) const {
    load_tile_async<D>(first(stage), a + offset, stride, row0, rows);
    load_tile_async<D>(second(stage), b + offset, stride, row0, rows);
  }
};

// ---- Tensor-core fragments.

// r[i] := this lane's part of 8 x 8 matrix i, whose 8 rows (16 bytes each) lanes 8 i .. 8 i + 7
// address: row g, columns 2t, 2t + 1.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(row)))
               : "memory");
}

// As ldmatrix_x4, transposed: r[i] := rows 2t, 2t + 1 of column g of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(row)))
               : "memory");
}

// d += A B for one 16 x 8 C fragment.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float low, float high) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
  uint32_t bits;
  memcpy(&bits, &pair, sizeof(bits));
  return bits;
}

// The transpose of the 8 x 8 bf16 matrix whose row g, columns 2t and 2t + 1 this lane holds in
// x: returns row g, columns 2t and 2t + 1 of the transpose.
__device__ __forceinline__ uint32_t transpose_8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// Max / sum over the 4 lanes of a quad (the threads holding one fragment row).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// The A fragment of rows [r0, r0 + 16) x columns [c0, c0 + 16) of a tile.
template <int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16_t* tile, int r0, int c0, int lane) {
  ldmatrix_x4(a, tile + (r0 + lane % 8 + 8 * (lane / 8 % 2)) * kRow<D> + c0 + 8 * (lane / 16));
}

// B fragments of two 8-column n-tiles from a tile that holds B transposed (row = n, column = k):
// n in [n0, n0 + 16), k in [k0, k0 + 16). b[0], b[1] are n-tile [n0, n0 + 8), b[2], b[3] the next.
template <int D>
__device__ __forceinline__ void load_b_n_rows(uint32_t (&b)[4], const bf16_t* tile, int n0, int k0, int lane) {
  ldmatrix_x4(b, tile + (n0 + lane % 8 + 8 * (lane / 16)) * kRow<D> + k0 + 8 * (lane / 8 % 2));
}

// The same from a tile that holds B as is (row = k, column = n), through the transposing load.
template <int D>
__device__ __forceinline__ void load_b_k_rows(uint32_t (&b)[4], const bf16_t* tile, int k0, int n0, int lane) {
  ldmatrix_x4_trans(b, tile + (k0 + lane % 8 + 8 * (lane / 8 % 2)) * kRow<D> + n0 + 8 * (lane / 16));
}

// A warp's 16 own rows of a tile that stays put for the whole kernel (the A operand of its score
// products), as A fragments over all D columns. At D = 64 the forward and dQ kernels load them
// once into 16 registers, which takes a quarter of the shared-memory reads off every score
// product; at D = 128, and in the dK/dV kernel (whose registers decide how many CTAs share an SM,
// kDkdvQueries), they are read from shared memory at each use.
template <int D, bool kInRegisters = (D <= 64)>
struct OwnRows;

template <int D>
struct OwnRows<D, true> {
  uint32_t fragment[D / 16][4];
  __device__ __forceinline__ OwnRows(const bf16_t* tile, int r0, int lane) {
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) load_a<D>(fragment[kc], tile, r0, 16 * kc, lane);
  }
  __device__ __forceinline__ void get(uint32_t (&a)[4], int kc, int) const {
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = fragment[kc][i];
  }
};

template <int D>
struct OwnRows<D, false> {
  const bf16_t* tile;
  int r0;
  __device__ __forceinline__ OwnRows(const bf16_t* t, int r, int) : tile(t), r0(r) {}
  __device__ __forceinline__ void get(uint32_t (&a)[4], int kc, int lane) const {
    load_a<D>(a, tile, r0, 16 * kc, lane);
  }
};

// acc (16 x N as N / 8 C fragments) += a warp's own 16 rows times rows [n0, n0 + N) of b,
// transposed, over all D columns: scores q.k (or dout.v) of 16 rows against N rows.
template <int D, int N, typename Rows>
__device__ __forceinline__ void mma_rows_rows(float (&acc)[N / 8][4], const Rows& a, const bf16_t* b, int n0,
                                              int lane) {
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    uint32_t af[4];
    a.get(af, kc, lane);
#pragma unroll
    for (int jp = 0; jp < N / 16; ++jp) {
      uint32_t bf[4];
      load_b_n_rows<D>(bf, b, n0 + 16 * jp, 16 * kc, lane);
      mma_bf16(acc[2 * jp], af, bf[0], bf[1]);
      mma_bf16(acc[2 * jp + 1], af, bf[2], bf[3]);
    }
  }
}

// acc (16 x D as D / 8 C fragments) += w (16 x K, as K / 8 C fragments, rounded to bf16) times
// rows [k0, k0 + K) of `rows` (K x D): a weighted sum of rows (P V, dS K, P^T dO, dS^T Q).
template <int D, int K>
__device__ __forceinline__ void mma_weights_rows(float (&acc)[D / 8][4], const float (&w)[K / 8][4], const bf16_t* rows,
                                                 int k0, int lane) {
#pragma unroll
  for (int kc = 0; kc < K / 16; ++kc) {
    const uint32_t af[4] = {pack_bf16x2(w[2 * kc][0], w[2 * kc][1]), pack_bf16x2(w[2 * kc][2], w[2 * kc][3]),
                            pack_bf16x2(w[2 * kc + 1][0], w[2 * kc + 1][1]),
                            pack_bf16x2(w[2 * kc + 1][2], w[2 * kc + 1][3])};
#pragma unroll
    for (int jp = 0; jp < D / 16; ++jp) {
      uint32_t bf[4];
      load_b_k_rows<D>(bf, rows, k0 + 16 * kc, 16 * jp, lane);
      mma_bf16(acc[2 * jp], af, bf[0], bf[1]);
      mma_bf16(acc[2 * jp + 1], af, bf[2], bf[3]);
    }
  }
}

// Whether every query of the tile at q0 sees every key of the tile at k0, so that no element needs
// the mask: both tiles lie inside their blocks and, causal, every key precedes every query.
__device__ __forceinline__ bool tile_unmasked(const DeviceBlockTask& task, int q0, int k0, bool causal) {
  return q0 + kTile <= task.nq && k0 + kTile <= task.nk && (!causal || k0 + kTile <= q0);
}

// The main loop of every kernel here: tiles at first, first + kTile, .. below end go through the
// two shared-memory stages. load(stage, pos) issues a tile's asynchronous copies; body(stage, pos)
// computes on a landed stage while the next tile's copies are in flight. The caller has issued
// and committed load(0, first) (after its own tiles' group, so the first wait also covers those).
template <typename Load, typename Body>
__device__ __forceinline__ void stream_tiles(int first, int end, Load&& load, Body&& body) {
  for (int pos = first, stage = 0; pos < end; pos += kTile, stage ^= 1) {
    if (pos + kTile < end) load(stage ^ 1, pos + kTile);  // the last iteration's barrier freed it
    commit_copies();
    wait_copies<1>();  // this stage's copies have landed (the next stage's may still be in flight)
    __syncthreads();
    body(stage, pos);
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
  }
}

template <int D, typename O>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(O* out, float* lse, const bf16_t* q, const bf16_t* k, const bf16_t* v, const DeviceBlockTask* tasks,
                   float scale, bool causal, float out_scale, bool merge) {
  const DeviceBlockTask task = tasks[blockIdx.x];
  // Highest query tiles first: under a causal mask they see the most keys.
  const int tile = static_cast<int>(gridDim.y - 1 - blockIdx.y);
  if (tile * kTile >= task.nq) return;
  const int q0 = tile * kTile;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;

  // q, then (k, v) of stage 0 and of stage 1.
  bf16_t* q_tile = reinterpret_cast<bf16_t*>(dynamic_shared_memory());
  const StagedPair<D> kv{q_tile + kTileElements<D>};
  auto load_keys = [&](int stage, int k0) { kv.load(stage, k, v, task.k_offset, task.k_stride, k0, task.nk); };
  const int keys = key_end(task, q0, causal);
  load_tile_async<D>(q_tile, q + task.q_offset, task.q_stride, q0, task.nq);
  commit_copies();
  if (keys > 0) load_keys(0, 0);
  commit_copies();
  wait_copies<1>();
  __syncthreads();
  const OwnRows<D> q_rows(q_tile, 16 * warp, lane);

  // Per fragment row h (tile row 16 warp + g + 8 h): running max of the scores in log2 units, and
  // this thread's share of the running sum (summed over the quad at the end).
  const float scale_log2 = scale * kLog2e;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;

  stream_tiles(0, keys, load_keys, [&](int stage, int k0) {
    float s[kTile / 8][4];
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    mma_rows_rows<D, kTile>(s, q_rows, kv.first(stage), 0, lane);

    const bool unmasked = tile_unmasked(task, q0, k0, causal);
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = q0 + 16 * warp + g + 8 * (e / 2), kj = k0 + 8 * j + 2 * t + e % 2;
        s[j][e] = unmasked || sees(qi, kj, task.nk, causal) ? s[j][e] * scale_log2 : -INFINITY;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], s[j][e]);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float m_new = fmaxf(m[h], quad_max(tile_max[h]));
      // While a row has seen no key, m stays -inf and exp2(-inf - -inf) would be NaN.
      const float alpha = m_new == -INFINITY ? 1.0f : exp2f(m[h] - m_new);
      m[h] = m_new;
      l[h] *= alpha;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) o[j][2 * h] *= alpha, o[j][2 * h + 1] *= alpha;
    }
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        s[j][e] = m[h] == -INFINITY ? 0.0f : exp2f(s[j][e] - m[h]);
        l[h] += s[j][e];
      }
    mma_weights_rows<D, kTile>(o, s, kv.second(stage), 0, lane);
  });

  float old_lse[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] = quad_sum(l[h]);
    const int qi = q0 + 16 * warp + g + 8 * h;
    old_lse[h] = merge && qi < task.nq ? lse[task.lse_offset + static_cast<int64_t>(qi) * task.lse_stride]
                                       : -INFINITY;
  }
  __syncwarp();  // the 4 threads of a row read its old lse before one of them writes the new one
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qi = q0 + 16 * warp + g + 8 * h;
    if (qi >= task.nq) continue;
    // l >= 1 once a key was seen (the max contributes 2^0).
    const float new_lse = l[h] > 0.0f ? (m[h] + log2f(l[h])) * kLn2 : -INFINITY;
    const float inv_l = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
    float keep = 0.0f, take = inv_l * out_scale, merged = new_lse;
    if (merge) {
      if (new_lse == -INFINITY) continue;  // this launch saw no key for the row: (out, lse) stand
      if (old_lse[h] != -INFINITY) {
        const float hi = fmaxf(old_lse[h], new_lse);
        merged = hi + log1pf(expf(fminf(old_lse[h], new_lse) - hi));
        keep = expf(old_lse[h] - merged);
        take *= expf(new_lse - merged);
      }
    }
    O* row = out + task.q_offset + static_cast<int64_t>(qi) * task.q_stride;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int d = 8 * j + 2 * t + e;
        const float before = keep == 0.0f ? 0.0f : load_float(row + d) * keep;
        store_float(row + d, before + o[j][2 * h + e] * take);
      }
    if (t == 0) lse[task.lse_offset + static_cast<int64_t>(qi) * task.lse_stride] = merged;
  }
}

// Row `row` of a gradient, the fragment row h of acc: := or += mul * acc over its columns.
template <int D, typename O>
__device__ __forceinline__ void store_gradient_row(O* row, const float (&acc)[D / 8][4], int h, float mul, int t,
                                                   bool accumulate) {
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int d = 8 * j + 2 * t + e;
      const float x = mul * acc[j][2 * h + e];
      store_float(row + d, accumulate ? load_float(row + d) + x : x);
    }
}

// The dQ rows of a warp's 16 queries from row0 on (fragment rows g and g + 8 of acc), scaled by
// `scale`; rows past the block's end are not stored.
template <int D, typename O>
__device__ __forceinline__ void store_query_gradients(O* dq, const float (&acc)[D / 8][4], const DeviceBlockTask& task,
                                                      int row0, int lane, float scale, bool accumulate) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qi = row0 + lane / 4 + 8 * h;
    if (qi >= task.nq) continue;
    store_gradient_row<D>(dq + task.q_offset + static_cast<int64_t>(qi) * task.q_stride, acc, h, scale, lane % 4,
                          accumulate);
  }
}

// Query columns per step of the dK/dV kernel. The dK and dV accumulators hold D / 2 registers a
// thread each; scoring 32 queries at a time and reading k and v from shared memory at each use
// keeps the D = 64 kernel at 132 registers, so 3 CTAs share an SM instead of 2 (at 64 queries,
// or with k and v in registers, it took 224 to 255).
constexpr int kDkdvQueries = 32;

template <int D, typename O>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(O* dk, O* dv, const bf16_t* dout, const float* delta, const float* lse, const bf16_t* q,
                const bf16_t* k, const bf16_t* v, const DeviceBlockTask* tasks, float scale, bool causal,
                float dout_scale, bool accumulate, DsTiles ds) {
  constexpr int kQueries = kDkdvQueries;
  const DeviceBlockTask task = tasks[blockIdx.x];
  const int tile = static_cast<int>(blockIdx.y);  // lowest key tiles first: under a causal mask most queries see them
  if (tile * kTile >= task.nk) return;
  const int k0 = tile * kTile;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;

  // k, v, then (q, dout) of stage 0 and of stage 1, then (lse, delta) of stage 0 and of stage 1.
  bf16_t* k_tile = reinterpret_cast<bf16_t*>(dynamic_shared_memory());
  bf16_t* v_tile = k_tile + kTileElements<D>;
  const StagedPair<D> queries{v_tile + kTileElements<D>};  // (q, dout)
  float* row_values = reinterpret_cast<float*>(queries.base + 4 * kTileElements<D>);
  auto lse_tile = [&](int stage) { return row_values + 2 * stage * kTile; };  // natural log; 0 past nq
  auto delta_tile = [&](int stage) { return row_values + (2 * stage + 1) * kTile; };
  auto load_queries = [&](int stage, int q0) {
    queries.load(stage, q, dout, task.q_offset, task.q_stride, q0, task.nq);
    load_row_values_async(lse_tile(stage), lse + task.lse_offset, task.lse_stride, q0, task.nq);
    load_row_values_async(delta_tile(stage), delta + task.lse_offset, task.lse_stride, q0, task.nq);
  };
  // Causal: queries before k0 see none of these keys (aligned blocks, equal tiles).
  const int first_q0 = causal ? k0 : 0;
  load_tile_async<D>(k_tile, k + task.k_offset, task.k_stride, k0, task.nk);
  load_tile_async<D>(v_tile, v + task.k_offset, task.k_stride, k0, task.nk);
  commit_copies();
  if (first_q0 < task.nq) load_queries(0, first_q0);
  commit_copies();
  wait_copies<1>();
  __syncthreads();
  const OwnRows<D, false> k_rows(k_tile, 16 * warp, lane), v_rows(v_tile, 16 * warp, lane);

  const float scale_log2 = scale * kLog2e;
  float dk_acc[D / 8][4], dv_acc[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[j][e] = dv_acc[j][e] = 0.0f;

  stream_tiles(first_q0, task.nq, load_queries, [&](int stage, int q0) {
    const bool unmasked = tile_unmasked(task, q0, k0, causal);
    const float* lse_row = lse_tile(stage);
    const float* delta_row = delta_tile(stage);
    // Transposed scores: fragment rows are this warp's keys, columns queries c0 + [0, kQueries).
#pragma unroll 1
    for (int c0 = 0; c0 < kTile; c0 += kQueries) {
      float s[kQueries / 8][4], dp[kQueries / 8][4];
#pragma unroll
      for (int j = 0; j < kQueries / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
      mma_rows_rows<D, kQueries>(s, k_rows, queries.first(stage), c0, lane);
      mma_rows_rows<D, kQueries>(dp, v_rows, queries.second(stage), c0, lane);
#pragma unroll
      for (int j = 0; j < kQueries / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kj = k0 + 16 * warp + g + 8 * (e / 2), r = c0 + 8 * j + 2 * t + e % 2;
          // Rows past nq are masked (their lse was filled with 0); a row no key reaches has lse -inf.
          const bool visible = unmasked || (q0 + r < task.nq && sees(q0 + r, kj, task.nk, causal));
          const float row_lse = lse_row[r];
          const float p = visible && row_lse != -INFINITY ? exp2f(s[j][e] * scale_log2 - row_lse * kLog2e) : 0.0f;
          s[j][e] = p;
          dp[j][e] = p * (dout_scale * dp[j][e] - delta_row[r]);  // dS^T
        }
      mma_weights_rows<D, kQueries>(dv_acc, s, queries.second(stage), c0, lane);
      mma_weights_rows<D, kQueries>(dk_acc, dp, queries.first(stage), c0, lane);
      if (ds.base != nullptr) {
        // The same bf16 pairs mma_weights_rows fed to the dK product, so dQ sees the same dS. This
        // warp holds dS^T (its 16 keys x the queries) as 8 x 8 blocks (h: keys 8 h.., j: queries
        // 8 j..); transposed, the blocks of 16 queries (j = 2 p, 2 p + 1) are the dQ product's A
        // fragment for those queries and this warp's 16 keys (DsTiles).
        uint4* ds_tile = reinterpret_cast<uint4*>(ds.tile(blockIdx.x, q0 / kTile, tile));
#pragma unroll
        for (int p = 0; p < kQueries / 16; ++p) {
          auto block = [&](int h, int j) { return transpose_8x8(pack_bf16x2(dp[j][2 * h], dp[j][2 * h + 1])); };
          const int query_warp = c0 / 16 + p;
          ds_tile[(4 * query_warp + warp) * 32 + lane] =
              make_uint4(block(0, 2 * p), block(0, 2 * p + 1), block(1, 2 * p), block(1, 2 * p + 1));
        }
      }
    }
  });

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int kj = k0 + 16 * warp + g + 8 * h;
    if (kj >= task.nk) continue;
    const int64_t at = task.k_offset + static_cast<int64_t>(kj) * task.k_stride;
    store_gradient_row<D>(dk + at, dk_acc, h, scale, t, accumulate);
    store_gradient_row<D>(dv + at, dv_acc, h, dout_scale, t, accumulate);
  }
}

template <int D, typename O>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(O* dq, const bf16_t* dout, const float* delta, const float* lse, const bf16_t* q, const bf16_t* k,
              const bf16_t* v, const DeviceBlockTask* tasks, float scale, bool causal, float dout_scale,
              bool accumulate) {
  const DeviceBlockTask task = tasks[blockIdx.x];
  const int tile = static_cast<int>(gridDim.y - 1 - blockIdx.y);  // highest query tiles first (most keys when causal)
  if (tile * kTile >= task.nq) return;
  const int q0 = tile * kTile;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;

  // q, dout, then (k, v) of stage 0 and of stage 1.
  bf16_t* q_tile = reinterpret_cast<bf16_t*>(dynamic_shared_memory());
  bf16_t* dout_tile = q_tile + kTileElements<D>;
  const StagedPair<D> kv{dout_tile + kTileElements<D>};
  auto load_keys = [&](int stage, int k0) { kv.load(stage, k, v, task.k_offset, task.k_stride, k0, task.nk); };
  const int keys = key_end(task, q0, causal);
  load_tile_async<D>(q_tile, q + task.q_offset, task.q_stride, q0, task.nq);
  load_tile_async<D>(dout_tile, dout + task.q_offset, task.q_stride, q0, task.nq);
  commit_copies();
  if (keys > 0) load_keys(0, 0);
  commit_copies();

  // lse (log2 units) and delta of fragment rows h; -inf / 0 past nq, so padding rows get p = 0.
  const float scale_log2 = scale * kLog2e;
  float row_lse[2], row_delta[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qi = q0 + 16 * warp + g + 8 * h;
    const int64_t at = task.lse_offset + static_cast<int64_t>(qi) * task.lse_stride;
    row_lse[h] = qi < task.nq ? lse[at] * kLog2e : -INFINITY;
    row_delta[h] = qi < task.nq ? delta[at] : 0.0f;
  }
  float dq_acc[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) dq_acc[j][0] = dq_acc[j][1] = dq_acc[j][2] = dq_acc[j][3] = 0.0f;
  wait_copies<1>();
  __syncthreads();
  const OwnRows<D> q_rows(q_tile, 16 * warp, lane), dout_rows(dout_tile, 16 * warp, lane);

  stream_tiles(0, keys, load_keys, [&](int stage, int k0) {
    float s[kTile / 8][4], dp[kTile / 8][4];
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.0f;
    mma_rows_rows<D, kTile>(s, q_rows, kv.first(stage), 0, lane);
    mma_rows_rows<D, kTile>(dp, dout_rows, kv.second(stage), 0, lane);
    const bool unmasked = tile_unmasked(task, q0, k0, causal);
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2, qi = q0 + 16 * warp + g + 8 * h, kj = k0 + 8 * j + 2 * t + e % 2;
        const bool visible = unmasked || (qi < task.nq && sees(qi, kj, task.nk, causal));
        const float p = visible && row_lse[h] != -INFINITY ? exp2f(s[j][e] * scale_log2 - row_lse[h]) : 0.0f;
        s[j][e] = p * (dout_scale * dp[j][e] - row_delta[h]);  // dS
      }
    mma_weights_rows<D, kTile>(dq_acc, s, kv.first(stage), 0, lane);
  });
  store_query_gradients<D>(dq, dq_acc, task, q0 + 16 * warp, lane, scale, accumulate);
}

// dQ from the dS tiles the dK/dV kernel left (DsTiles): one product per tile (dS k) where dq_kernel
// recomputes the scores and dP first (three). A CTA per 64-query tile streams (dS, k) tile pairs
// through two stages, as dq_kernel streams (k, v).
template <int D, typename O>
__global__ void __launch_bounds__(kThreads)
    dq_from_ds_kernel(O* dq, DsTiles ds, const bf16_t* k, const DeviceBlockTask* tasks, float scale, bool causal,
                      bool accumulate) {
  const DeviceBlockTask task = tasks[blockIdx.x];
  const int tile = static_cast<int>(gridDim.y - 1 - blockIdx.y);  // highest query tiles first (most keys when causal)
  if (tile * kTile >= task.nq) return;
  const int q0 = tile * kTile;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;

  // (dS, k) of stage 0, then of stage 1.
  unsigned char* smem = dynamic_shared_memory();
  auto ds_stage = [&](int stage) {
    return reinterpret_cast<uint4*>(smem + stage * (kDsTileBytes + kTileBytes<D>));
  };
  auto k_stage = [&](int stage) { return reinterpret_cast<bf16_t*>(ds_stage(stage)) + kTile * kTile; };
  auto load_keys = [&](int stage, int k0) {
    const uint4* from = reinterpret_cast<const uint4*>(ds.tile(blockIdx.x, tile, k0 / kTile));
#pragma unroll
    for (int i = 0; i < kDsTileBytes / 16 / kThreads; ++i) {
      const int e = static_cast<int>(threadIdx.x) + i * kThreads;
      copy_async_16(ds_stage(stage) + e, from + e, true);
    }
    load_tile_async<D>(k_stage(stage), k + task.k_offset, task.k_stride, k0, task.nk);
  };
  const int keys = key_end(task, q0, causal);
  if (keys > 0) load_keys(0, 0);
  commit_copies();
  float dq_acc[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) dq_acc[j][0] = dq_acc[j][1] = dq_acc[j][2] = dq_acc[j][3] = 0.0f;

  stream_tiles(0, keys, load_keys, [&](int stage, int) {
#pragma unroll
    for (int kc = 0; kc < kTile / 16; ++kc) {
      // The A fragment of dS (this warp's 16 queries x keys [16 kc, 16 kc + 16)), stored as such.
      const uint4 fragment = ds_stage(stage)[(4 * warp + kc) * 32 + lane];
      const uint32_t af[4] = {fragment.x, fragment.y, fragment.z, fragment.w};
#pragma unroll
      for (int jp = 0; jp < D / 16; ++jp) {
        uint32_t bf[4];
        load_b_k_rows<D>(bf, k_stage(stage), 16 * kc, 16 * jp, lane);
        mma_bf16(dq_acc[2 * jp], af, bf[0], bf[1]);
        mma_bf16(dq_acc[2 * jp + 1], af, bf[2], bf[3]);
      }
    }
  });
  store_query_gradients<D>(dq, dq_acc, task, q0 + 16 * warp, lane, scale, accumulate);
}

}  // namespace mma
}  // namespace block_attention_device
}  // namespace dilatron
