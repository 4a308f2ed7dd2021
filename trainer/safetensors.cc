#include "trainer/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace dilatron {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as huggingface/safetensors

const char* safetensors_dtype(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
  }
  DILATRON_CHECK(false, "unknown dtype");
  return "";
}

bool parse_dtype(const std::string& name, DType* dtype) {
  for (DType d : {DType::f32, DType::f64, DType::bf16, DType::i32}) {
    if (name == safetensors_dtype(d)) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& name, const nlohmann::json& j, uint64_t data_bytes,
                  const std::string& source) {
  auto fail = [&](const std::string& what) {
    throw InputError(fmt::format("{}: tensor \"{}\": {}; the file is corrupt, re-create it",
                                 source, name, what));
  };
  if (!j.is_object()) fail("header entry is not an object");
  Entry e{name, DType::f32, {}, 0, 0};
  auto dtype = j.find("dtype");
  if (dtype == j.end() || !dtype->is_string()) fail("no dtype string");
  if (!parse_dtype(dtype->get<std::string>(), &e.dtype))
    fail("unsupported dtype " + dtype->dump() + " (F32, F64, BF16, I32 are supported)");
  auto shape = j.find("shape");
  if (shape == j.end() || !shape->is_array()) fail("no shape array");
  for (const auto& d : *shape) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > data_bytes)
      fail(fmt::format("shape {} has a negative, non-integer or larger than {} dimension",
                       shape->dump(), data_bytes));
    e.shape.push_back(d.get<int64_t>());
  }
  // The product saturates at data_bytes + 1 (the size check below fails either way), so
  // 128-bit steps never overflow.
  const bool has_zero = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
  uint64_t numel = has_zero ? 0 : 1;
  for (int64_t d : e.shape)
    numel = static_cast<uint64_t>(std::min<unsigned __int128>(
        static_cast<unsigned __int128>(numel) * static_cast<uint64_t>(d), data_bytes + 1));
  if (numel > data_bytes) fail(fmt::format("shape {} needs more than the {} data bytes", shape->dump(), data_bytes));
  auto offsets = j.find("data_offsets");
  if (offsets == j.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
    fail("data_offsets is not two non-negative integers");
  e.begin = (*offsets)[0].get<uint64_t>();
  e.end = (*offsets)[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_bytes)
    fail(fmt::format("data_offsets [{}, {}] outside the {} data bytes (truncated file?)", e.begin,
                     e.end, data_bytes));
  if (numel * dtype_size(e.dtype) != e.end - e.begin)
    fail(fmt::format("shape {} of {} needs {} bytes but data_offsets span {}", shape->dump(),
                     dtype->get<std::string>(), numel * dtype_size(e.dtype),
                     e.end - e.begin));
  return e;
}

}  // namespace

std::string safetensors_header(const std::vector<NamedTensor>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    DILATRON_CHECK(name != "__metadata__" && !header.contains(name), "tensor name \"{}\" is reserved or repeated", name);
    DILATRON_CHECK(tensor.device() == Device::cpu, "tensor {} is on {}", name, device_name(tensor.device()));
    header[name] = {{"dtype", safetensors_dtype(tensor.dtype())},
                    {"shape", tensor.shape()},
                    {"data_offsets", {offset, offset + tensor.nbytes()}}};
    offset += tensor.nbytes();
  }
  std::string json = header.dump();
  json.resize((json.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json;
}

std::string safetensors_serialize(const std::vector<NamedTensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::string out = safetensors_header(tensors, metadata);
  for (const auto& t : tensors) out.append(static_cast<const char*>(t.tensor.raw()), t.tensor.nbytes());
  return out;
}

std::vector<NamedTensor> safetensors_parse(std::string_view bytes, const std::string& source,
                                           std::map<std::string, std::string>* metadata) {
  DILATRON_CHECK_INPUT(bytes.size() >= 8, "{}: {} bytes, too short for a safetensors file; the file is truncated", source, bytes.size());
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  DILATRON_CHECK_INPUT(n <= kMaxHeaderBytes && n <= bytes.size() - 8,
                       "{}: header length {} exceeds the {} bytes after it; the file is truncated or not safetensors",
                       source, n, bytes.size() - 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, n));
  } catch (const nlohmann::json::exception& e) {
    throw InputError(fmt::format("{}: the safetensors header is not valid JSON ({}); the file is corrupt", source, e.what()));
  }
  DILATRON_CHECK_INPUT(header.is_object(), "{}: the safetensors header is not a JSON object; the file is corrupt", source);
  const std::string_view data = bytes.substr(8 + n);

  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      DILATRON_CHECK_INPUT(value.is_object(), "{}: __metadata__ is not an object", source);
      for (const auto& [key, text] : value.items()) {
        DILATRON_CHECK_INPUT(text.is_string(), "{}: __metadata__[\"{}\"] is not a string", source, key);
        if (metadata) (*metadata)[key] = text.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, value, data.size(), source));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // The tensors tile the data area exactly: no overlap, no gap, nothing after the last.
  uint64_t covered = 0;
  for (const Entry& e : entries) {
    DILATRON_CHECK_INPUT(e.begin == covered,
                         "{}: tensor \"{}\" starts at data byte {} but the previous tensor ends at {} "
                         "(overlapping or gapped offsets); the file is corrupt",
                         source, e.name, e.begin, covered);
    covered = e.end;
  }
  DILATRON_CHECK_INPUT(covered == data.size(),
                       "{}: the tensors cover {} of the {} data bytes (trailing bytes); the file is corrupt",
                       source, covered, data.size());

  std::vector<NamedTensor> tensors;
  tensors.reserve(entries.size());
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    std::memcpy(t.raw(), data.data() + e.begin, e.end - e.begin);
    tensors.push_back({e.name, std::move(t)});
  }
  return tensors;
}

}  // namespace dilatron
