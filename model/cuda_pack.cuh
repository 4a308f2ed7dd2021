// Pack<T, kVec>: kVec consecutive values of T that one thread loads or stores with a single
// instruction. With kVec = kPack16<T> (8 bf16, 4 fp32) that is the widest access a thread can
// issue, 16 bytes, which the bandwidth-bound kernels need to keep enough bytes in flight; with
// kVec = 1 it is a plain element, the fallback for rows that are not 16-byte aligned. Device
// code only: include from .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dilatron::gpu {

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <typename T>
constexpr int kPack16 = 16 / static_cast<int>(sizeof(T));

// p must be aligned to sizeof(Pack): a 16-byte aligned base plus a multiple of kVec elements.
template <int kVec, typename T>
__device__ __forceinline__ Pack<T, kVec> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, kVec>*>(p);
}
template <int kVec, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, kVec>& x) {
  *reinterpret_cast<Pack<T, kVec>*>(p) = x;
}

// Rows of `row_elements` Ts starting at p can all be read kPack16<T> at a time.
template <typename T>
inline bool rows_aligned_16(const T* p, int64_t row_elements) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && row_elements % kPack16<T> == 0;
}

}  // namespace dilatron::gpu
