// The safetensors file format (huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON describing each tensor (dtype, shape, data_offsets relative to
// the data area) and "__metadata__", padded with spaces to a multiple of 8; then the data.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace dilatron {

struct NamedTensor {
  std::string name;
  Tensor tensor;  // CPU
};

// The 8-byte length and the padded JSON; the tensors' bytes follow in the order given.
std::string safetensors_header(const std::vector<NamedTensor>& tensors,
                               const std::map<std::string, std::string>& metadata);

std::string safetensors_serialize(const std::vector<NamedTensor>& tensors,
                                  const std::map<std::string, std::string>& metadata);

// Tensors in file order. Validates the header length, JSON, dtypes, shapes, offsets (in range,
// sized to the shape, not overlapping, covering the data area) and throws InputError naming
// `source` on any problem.
std::vector<NamedTensor> safetensors_parse(std::string_view bytes, const std::string& source,
                                           std::map<std::string, std::string>* metadata = nullptr);

}  // namespace dilatron
