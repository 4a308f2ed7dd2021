// An owning, contiguous tensor: shape, dtype and device, with storage shared by views.
// Layers take raw pointers plus dimensions (llm.c style); Tensor owns and describes memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/check.h"

namespace dilatron {

enum class DType { f32, f64, bf16, i32 };
enum class Device { cpu, cuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* device_name(Device device);

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised storage (CPU memory is 64-byte aligned for vector loads).
  static Tensor empty(std::vector<int64_t> shape, DType dtype, Device device = Device::cpu);
  static Tensor zeros(std::vector<int64_t> shape, DType dtype, Device device = Device::cpu);

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const;
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool defined() const { return storage_ != nullptr; }

  void* raw() const { return storage_.get(); }
  template <typename T>
  T* data() const {
    DILATRON_CHECK(dtype_of<T>() == dtype_, "tensor holds {}, asked for {}", dtype_name(dtype_),
                   dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw());
  }

  // Same storage, new shape with the same element count.
  Tensor reshaped(std::vector<int64_t> shape) const;
  // A copy on another device (or the same one).
  Tensor to(Device device) const;
  std::string describe() const;

 private:
  std::shared_ptr<std::byte> storage_;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

int64_t shape_numel(const std::vector<int64_t>& shape);

}  // namespace dilatron
