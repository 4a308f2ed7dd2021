#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <numeric>

#include "core/cuda_check.h"

namespace dilatron {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
  }
  DILATRON_CHECK(false, "unknown dtype");
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::cpu ? "cpu" : "cuda"; }

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    DILATRON_CHECK(d >= 0, "negative dimension {}", d);
    n *= d;
  }
  return n;
}

namespace {

std::shared_ptr<std::byte> allocate(size_t bytes, Device device) {
  size_t padded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  if (device == Device::cpu) {
    void* p = std::aligned_alloc(64, padded);
    DILATRON_CHECK(p != nullptr, "out of host memory allocating {} bytes", padded);
    return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
  }
#ifdef DILATRON_CUDA
  void* p = nullptr;
  DILATRON_CUDA_CHECK(cudaMalloc(&p, padded));
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { cudaFree(q); });
#else
  throw InputError("this build has no CUDA support: rerun scripts/setup on a machine with a CUDA toolkit, or set device: cpu");
#endif
}

}  // namespace

Tensor Tensor::empty(std::vector<int64_t> shape, DType dtype, Device device) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = allocate(t.nbytes(), device);
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  if (device == Device::cpu) {
    std::memset(t.raw(), 0, t.nbytes());
  } else {
#ifdef DILATRON_CUDA
    DILATRON_CUDA_CHECK(cudaMemset(t.raw(), 0, t.nbytes()));
#endif
  }
  return t;
}

int64_t Tensor::dim(int i) const {
  DILATRON_CHECK(i >= 0 && i < static_cast<int>(shape_.size()), "dim {} of a rank-{} tensor", i,
                 shape_.size());
  return shape_[i];
}

Tensor Tensor::reshaped(std::vector<int64_t> shape) const {
  DILATRON_CHECK(shape_numel(shape) == numel_, "reshape changes the element count");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  if (device_ == Device::cpu && device == Device::cpu) {
    std::memcpy(t.raw(), raw(), nbytes());
    return t;
  }
#ifdef DILATRON_CUDA
  DILATRON_CUDA_CHECK(cudaMemcpy(t.raw(), raw(), nbytes(), cudaMemcpyDefault));
#endif
  return t;
}

std::string Tensor::describe() const {
  std::string s = std::string(dtype_name(dtype_)) + "[";
  for (size_t i = 0; i < shape_.size(); ++i) s += (i ? "," : "") + std::to_string(shape_[i]);
  return s + "]@" + device_name(device_);
}

}  // namespace dilatron
