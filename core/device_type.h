// The device twin of a storage type: CUDA's __nv_bfloat16 for dilatron::bf16 (core/bf16.h, the
// same 16 bits), any other type itself. Host code keeps dilatron::bf16; kernels take the CUDA
// type, and device_ptr converts a pointer at the seam between them.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_bf16.h>

#include "core/bf16.h"

namespace dilatron {

static_assert(sizeof(bf16) == sizeof(__nv_bfloat16), "bf16 and __nv_bfloat16 share one layout");

template <typename T>
struct DeviceType {
  using type = T;
};
template <>
struct DeviceType<bf16> {
  using type = __nv_bfloat16;
};
template <typename T>
using device_type_t = typename DeviceType<T>::type;

template <typename T>
device_type_t<T>* device_ptr(T* p) {
  return reinterpret_cast<device_type_t<T>*>(p);
}
template <typename T>
const device_type_t<T>* device_ptr(const T* p) {
  return reinterpret_cast<const device_type_t<T>*>(p);
}

}  // namespace dilatron
#endif
