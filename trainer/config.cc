// The schema is one table of fields, each bound to its struct member: reading, override lookup,
// unknown-key suggestions and config_to_yaml all walk the same table, so a field added there is
// complete everywhere at once.
#include "trainer/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>

#include <fmt/core.h>

#include "core/check.h"
#include "trainer/config_validate.h"

namespace dilatron {
namespace {

// ---- Enum spellings ----------------------------------------------------------------------

template <typename E>
using Spellings = std::array<std::pair<std::string_view, E>, 2>;
template <typename E>
using Spellings3 = std::array<std::pair<std::string_view, E>, 3>;

constexpr Spellings<AttentionKind> spellings(AttentionKind) {
  return {{{"dense", AttentionKind::dense}, {"dilated", AttentionKind::dilated}}};
}
constexpr Spellings<AttentionMode> spellings(AttentionMode) {
  return {{{"longnet", AttentionMode::longnet}, {"head_groups", AttentionMode::head_groups}}};
}
constexpr Spellings<PositionEncoding> spellings(PositionEncoding) {
  return {{{"rotary", PositionEncoding::rotary}, {"learned", PositionEncoding::learned}}};
}
constexpr Spellings<NormType> spellings(NormType) {
  return {{{"layernorm", NormType::layernorm}, {"rmsnorm", NormType::rmsnorm}}};
}
constexpr Spellings<DataFormat> spellings(DataFormat) {
  return {{{"text", DataFormat::text}, {"tokens", DataFormat::tokens}}};
}
constexpr Spellings3<DeviceKind> spellings(DeviceKind) {
  return {{{"auto", DeviceKind::automatic}, {"cpu", DeviceKind::cpu}, {"cuda", DeviceKind::cuda}}};
}
constexpr Spellings3<ParallelBackend> spellings(ParallelBackend) {
  return {{{"auto", ParallelBackend::automatic}, {"nccl", ParallelBackend::nccl}, {"mpi", ParallelBackend::mpi}}};
}
constexpr Spellings3<OffloadTier> spellings(OffloadTier) {
  return {{{"device", OffloadTier::device}, {"cpu", OffloadTier::cpu}, {"nvme", OffloadTier::nvme}}};
}

template <typename E>
std::string_view spelling_of(E value) {
  for (const auto& [name, v] : spellings(E{}))
    if (v == value) return name;
  DILATRON_CHECK(false, "enum value {} has no spelling", static_cast<int>(value));
  return {};
}

// ---- Scalar decoding: strict, so a float for an int or a word for a number is an error -----

std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return fmt::format("'{}'", node.Scalar());
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  return "nothing";
}

std::string scalar_or_throw(const YAML::Node& node, const std::string& where, std::string_view expected) {
  DILATRON_CHECK_INPUT(node.IsScalar(), "{}: expected {}, got {}", where, expected, describe(node));
  return node.Scalar();
}

template <typename T>
T decode_integer(const YAML::Node& node, const std::string& where) {
  constexpr std::string_view expected =
      std::is_signed_v<T> ? "an integer" : "a non-negative integer";
  std::string text = scalar_or_throw(node, where, expected);
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  DILATRON_CHECK_INPUT(ec != std::errc::result_out_of_range, "{}: {} is out of range ({}..{})",
                       where, text, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
  DILATRON_CHECK_INPUT(ec == std::errc() && end == text.data() + text.size(),
                       "{}: expected {}, got '{}'", where, expected, text);
  return value;
}

void decode(const YAML::Node& n, int& out, const std::string& where) { out = decode_integer<int>(n, where); }
void decode(const YAML::Node& n, int64_t& out, const std::string& where) {
  out = decode_integer<int64_t>(n, where);
}
void decode(const YAML::Node& n, uint64_t& out, const std::string& where) {
  out = decode_integer<uint64_t>(n, where);
}

void decode(const YAML::Node& node, double& out, const std::string& where) {
  std::string text = scalar_or_throw(node, where, "a number");
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  DILATRON_CHECK_INPUT(ec == std::errc() && end == text.data() + text.size() && std::isfinite(value),
                       "{}: expected a number, got '{}'", where, text);
  out = value;
}

void decode(const YAML::Node& node, bool& out, const std::string& where) {
  std::string text = scalar_or_throw(node, where, "true or false");
  bool is_true = text == "true" || text == "True" || text == "TRUE";
  bool is_false = text == "false" || text == "False" || text == "FALSE";
  DILATRON_CHECK_INPUT(is_true || is_false, "{}: expected true or false, got '{}'", where, text);
  out = is_true;
}

// A key left empty (`val_path:`) is the empty string.
void decode(const YAML::Node& node, std::string& out, const std::string& where) {
  out = node.IsNull() ? std::string() : scalar_or_throw(node, where, "a string");
}

void decode(const YAML::Node& node, std::vector<int64_t>& out, const std::string& where) {
  if (node.IsNull()) {
    out.clear();
    return;
  }
  DILATRON_CHECK_INPUT(node.IsSequence(), "{}: expected a list of integers like [64, 128], got {}",
                       where, describe(node));
  std::vector<int64_t> values;
  for (size_t i = 0; i < node.size(); ++i)
    values.push_back(decode_integer<int64_t>(node[i], fmt::format("{}[{}]", where, i)));
  out = std::move(values);
}

template <typename E>
  requires std::is_enum_v<E>
void decode(const YAML::Node& node, E& out, const std::string& where) {
  std::string names;
  for (const auto& [name, v] : spellings(E{})) names += (names.empty() ? "" : " | ") + std::string(name);
  std::string text = scalar_or_throw(node, where, "one of " + names);
  for (const auto& [name, v] : spellings(E{})) {
    if (name == text) {
      out = v;
      return;
    }
  }
  DILATRON_CHECK_INPUT(false, "{}: expected one of {}, got '{}'", where, names, text);
}

// ---- Encoding ---------------------------------------------------------------------------

void encode(YAML::Emitter& out, int v) { out << v; }
void encode(YAML::Emitter& out, int64_t v) { out << v; }
void encode(YAML::Emitter& out, uint64_t v) { out << v; }
// The shortest form that reads back bit-identical, with a '.' so that YAML 1.1 readers (PyYAML)
// also see a float: 1.0, 0.001, 1.0e-08.
void encode(YAML::Emitter& out, double v) {
  std::string text = fmt::format("{}", v);
  if (text.find('.') == std::string::npos) {
    size_t exponent = text.find('e');
    text.insert(exponent == std::string::npos ? text.size() : exponent, ".0");
  }
  out << text;
}
void encode(YAML::Emitter& out, bool v) { out << (v ? "true" : "false"); }
void encode(YAML::Emitter& out, const std::string& v) { out << YAML::DoubleQuoted << v; }
void encode(YAML::Emitter& out, const std::vector<int64_t>& v) {
  out << YAML::Flow << YAML::BeginSeq;
  for (int64_t x : v) out << x;
  out << YAML::EndSeq;
}
template <typename E>
  requires std::is_enum_v<E>
void encode(YAML::Emitter& out, E v) {
  out << std::string(spelling_of(v));
}

// ---- The schema -------------------------------------------------------------------------

struct Field {
  std::string section;  // empty for top-level scalars (device, seed)
  std::string name;
  std::function<void(Config&, const YAML::Node&, const std::string& where)> read;
  std::function<void(const Config&, YAML::Emitter&)> write;

  std::string path() const { return section.empty() ? name : section + "." + name; }
};

template <typename S, typename T>
Field field(std::string section, S Config::*sec, std::string name, T S::*member) {
  return {std::move(section), std::move(name),
          [=](Config& c, const YAML::Node& n, const std::string& where) { decode(n, c.*sec.*member, where); },
          [=](const Config& c, YAML::Emitter& out) { encode(out, c.*sec.*member); }};
}

template <typename T>
Field top_level(std::string name, T Config::*member) {
  return {"", std::move(name),
          [=](Config& c, const YAML::Node& n, const std::string& where) { decode(n, c.*member, where); },
          [=](const Config& c, YAML::Emitter& out) { encode(out, c.*member); }};
}

// In the order config_to_yaml writes them; a section's fields are contiguous.
const std::vector<Field>& schema() {
  using C = Config;
  static const std::vector<Field> fields = {
      top_level("device", &C::device),
      top_level("seed", &C::seed),
      field("model", &C::model, "n_layers", &ModelConfig::n_layers),
      field("model", &C::model, "d_model", &ModelConfig::d_model),
      field("model", &C::model, "n_heads", &ModelConfig::n_heads),
      field("model", &C::model, "vocab_size", &ModelConfig::vocab_size),
      field("model", &C::model, "seq_len", &ModelConfig::seq_len),
      field("model", &C::model, "d_ff", &ModelConfig::d_ff),
      field("model", &C::model, "position", &ModelConfig::position),
      field("model", &C::model, "norm", &ModelConfig::norm),
      field("model", &C::model, "rope_theta", &ModelConfig::rope_theta),
      field("model", &C::model, "init_std", &ModelConfig::init_std),
      field("model", &C::model, "recompute", &ModelConfig::recompute),
      field("attention", &C::attention, "kind", &AttentionConfig::kind),
      field("attention", &C::attention, "mode", &AttentionConfig::mode),
      field("attention", &C::attention, "segment_lengths", &AttentionConfig::segment_lengths),
      field("attention", &C::attention, "dilation_rates", &AttentionConfig::dilation_rates),
      field("attention", &C::attention, "causal", &AttentionConfig::causal),
      field("parallel", &C::parallel, "sequence_parallel", &ParallelConfig::sequence_parallel),
      field("parallel", &C::parallel, "backend", &ParallelConfig::backend),
      field("parallel", &C::parallel, "share_gpus", &ParallelConfig::share_gpus),
      field("parallel", &C::parallel, "overlap_ring", &ParallelConfig::overlap_ring),
      field("zero", &C::zero, "stage", &ZeroConfig::stage),
      field("zero", &C::zero, "offload_params", &ZeroConfig::offload_params),
      field("zero", &C::zero, "offload_optimizer", &ZeroConfig::offload_optimizer),
      field("zero", &C::zero, "nvme_path", &ZeroConfig::nvme_path),
      field("zero", &C::zero, "persistence_threshold", &ZeroConfig::persistence_threshold),
      field("zero", &C::zero, "prefetch_depth", &ZeroConfig::prefetch_depth),
      field("zero", &C::zero, "nvme_block_bytes", &ZeroConfig::nvme_block_bytes),
      field("zero", &C::zero, "nvme_queue_depth", &ZeroConfig::nvme_queue_depth),
      field("zero", &C::zero, "host_threads", &ZeroConfig::host_threads),
      field("optimizer", &C::optimizer, "lr", &OptimizerConfig::lr),
      field("optimizer", &C::optimizer, "beta1", &OptimizerConfig::beta1),
      field("optimizer", &C::optimizer, "beta2", &OptimizerConfig::beta2),
      field("optimizer", &C::optimizer, "eps", &OptimizerConfig::eps),
      field("optimizer", &C::optimizer, "weight_decay", &OptimizerConfig::weight_decay),
      field("optimizer", &C::optimizer, "grad_clip", &OptimizerConfig::grad_clip),
      field("schedule", &C::schedule, "max_steps", &ScheduleConfig::max_steps),
      field("schedule", &C::schedule, "warmup_steps", &ScheduleConfig::warmup_steps),
      field("schedule", &C::schedule, "min_lr_ratio", &ScheduleConfig::min_lr_ratio),
      field("data", &C::data, "path", &DataConfig::path),
      field("data", &C::data, "format", &DataConfig::format),
      field("data", &C::data, "val_path", &DataConfig::val_path),
      field("data", &C::data, "val_fraction", &DataConfig::val_fraction),
      field("data", &C::data, "batch_size", &DataConfig::batch_size),
      field("data", &C::data, "micro_batch_size", &DataConfig::micro_batch_size),
      field("data", &C::data, "eval_every", &DataConfig::eval_every),
      field("data", &C::data, "eval_batches", &DataConfig::eval_batches),
      field("checkpoint", &C::checkpoint, "every", &CheckpointConfig::every),
      field("checkpoint", &C::checkpoint, "keep", &CheckpointConfig::keep),
      field("checkpoint", &C::checkpoint, "at_end", &CheckpointConfig::at_end),
      field("logging", &C::logging, "run_dir", &LoggingConfig::run_dir),
      field("logging", &C::logging, "every", &LoggingConfig::every),
      field("logging", &C::logging, "progress_bar", &LoggingConfig::progress_bar),
      field("sample", &C::sample, "tokens", &SampleConfig::tokens),
      field("sample", &C::sample, "prompt", &SampleConfig::prompt),
      field("sample", &C::sample, "temperature", &SampleConfig::temperature),
      field("sample", &C::sample, "top_k", &SampleConfig::top_k),
  };
  return fields;
}

bool is_section(const std::string& name) {
  return std::any_of(schema().begin(), schema().end(), [&](const Field& f) { return f.section == name; });
}

const Field* find_field(const std::string& section, const std::string& name) {
  for (const Field& f : schema())
    if (f.section == section && f.name == name) return &f;
  return nullptr;
}

// ---- Unknown keys -----------------------------------------------------------------------

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
    }
  }
  return row[b.size()];
}

// " (did you mean X?)" when one candidate is within two edits, else "".
std::string suggestion(const std::string& key, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = 3;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(key, c);
    if (d < best_distance && d < key.size()) best = &c, best_distance = d;
  }
  return best ? fmt::format(" (did you mean {}?)", *best) : "";
}

std::vector<std::string> keys_in(const std::string& section) {
  std::vector<std::string> keys;
  for (const Field& f : schema())
    if (f.section == section) keys.push_back(f.path());
  if (section.empty())
    for (const Field& f : schema())
      if (!f.section.empty() && (keys.empty() || keys.back() != f.section)) keys.push_back(f.section);
  return keys;
}

std::vector<std::string> all_keys() {
  std::vector<std::string> keys;
  for (const Field& f : schema()) keys.push_back(f.path());
  return keys;
}

// ---- Reading a document -----------------------------------------------------------------

std::string key_of(const YAML::Node& key, const std::string& where) {
  DILATRON_CHECK_INPUT(key.IsScalar(), "{}: keys must be plain names, got {}", where, describe(key));
  return key.Scalar();
}

void read_section(Config& config, const std::string& section, const YAML::Node& node,
                  const std::string& source) {
  if (node.IsNull()) return;  // `model:` with nothing under it keeps the defaults
  DILATRON_CHECK_INPUT(node.IsMap(), "{}: {}: expected a map of {} settings, got {}", source, section,
                       section, describe(node));
  std::set<std::string> seen;
  for (const auto& entry : node) {
    std::string name = key_of(entry.first, fmt::format("{}: {}", source, section));
    std::string path = section + "." + name;
    const Field* f = find_field(section, name);
    DILATRON_CHECK_INPUT(f != nullptr, "{}: unknown key {}{}", source, path,
                         suggestion(path, keys_in(section)));
    DILATRON_CHECK_INPUT(seen.insert(name).second, "{}: key {} appears twice", source, path);
    f->read(config, entry.second, fmt::format("{}: {}", source, path));
  }
}

void read_document(Config& config, const YAML::Node& root, const std::string& source) {
  if (root.IsNull()) return;
  DILATRON_CHECK_INPUT(root.IsMap(), "{}: expected a map of sections (model:, data:, ...) at the top, got {}",
                       source, describe(root));
  std::set<std::string> seen;
  for (const auto& entry : root) {
    std::string name = key_of(entry.first, source);
    DILATRON_CHECK_INPUT(seen.insert(name).second, "{}: key {} appears twice", source, name);
    if (is_section(name)) {
      read_section(config, name, entry.second, source);
    } else {
      const Field* f = find_field("", name);
      DILATRON_CHECK_INPUT(f != nullptr, "{}: unknown key {}{}", source, name, suggestion(name, keys_in("")));
      f->read(config, entry.second, fmt::format("{}: {}", source, name));
    }
  }
}

YAML::Node load_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw InputError(fmt::format("{}:{}:{}: YAML syntax error: {}", source, e.mark.line + 1,
                                 e.mark.column + 1, e.msg));
  }
}

void apply_override(Config& config, const std::string& assignment) {
  size_t eq = assignment.find('=');
  std::string key = eq == std::string::npos ? "" : assignment.substr(0, eq);
  DILATRON_CHECK_INPUT(!key.empty() && key.find_first_of(" \t") == std::string::npos,
                       "--set: expected key.path=value, got '{}'", assignment);
  std::string value_text = assignment.substr(eq + 1);
  DILATRON_CHECK_INPUT(!is_section(key), "--set: {} is a section; set one of its keys, e.g. {}", key,
                       keys_in(key).front());
  size_t dot = key.find('.');
  const Field* f = dot == std::string::npos ? find_field("", key)
                                            : find_field(key.substr(0, dot), key.substr(dot + 1));
  DILATRON_CHECK_INPUT(f != nullptr, "--set: unknown key {}{}", key, suggestion(key, all_keys()));
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::ParserException& e) {
    throw InputError(fmt::format("--set {}: cannot read '{}' as a YAML value: {}", key, value_text, e.msg));
  }
  f->read(config, value, "--set " + key);
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                    const std::string& source_name) {
  Config config;
  read_document(config, load_yaml(yaml_text, source_name), source_name);
  for (const std::string& assignment : overrides) apply_override(config, assignment);
  validate_config(config, source_name);
  return config;
}

Config load_config_file(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  DILATRON_CHECK_INPUT(in.good(), "config file {}: cannot be opened: {}", path, std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  DILATRON_CHECK_INPUT(!in.bad(), "config file {}: read failed", path);
  return parse_config(text.str(), overrides, path);
}

std::string config_to_yaml(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string open_section;
  for (const Field& f : schema()) {
    if (f.section != open_section) {
      if (!open_section.empty()) out << YAML::EndMap;
      open_section = f.section;
      out << YAML::Key << open_section << YAML::Value << YAML::BeginMap;
    }
    out << YAML::Key << f.name << YAML::Value;
    f.write(config, out);
  }
  if (!open_section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  DILATRON_CHECK(out.good(), "YAML emitter: {}", out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

std::string_view to_string(AttentionKind v) { return spelling_of(v); }
std::string_view to_string(AttentionMode v) { return spelling_of(v); }
std::string_view to_string(PositionEncoding v) { return spelling_of(v); }
std::string_view to_string(NormType v) { return spelling_of(v); }
std::string_view to_string(DataFormat v) { return spelling_of(v); }
std::string_view to_string(DeviceKind v) { return spelling_of(v); }
std::string_view to_string(OffloadTier v) { return spelling_of(v); }
std::string_view to_string(ParallelBackend v) { return spelling_of(v); }

}  // namespace dilatron
