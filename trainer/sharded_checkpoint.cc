#include "trainer/sharded_checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <charconv>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>

#include <spdlog/spdlog.h>

#include "core/check.h"
#include "trainer/durable_files.h"
#include "trainer/safetensors.h"

namespace dilatron {

namespace {

using json = nlohmann::json;

constexpr const char* kManifestFile = "manifest.json";
constexpr const char* kLatestFile = "latest";
constexpr const char* kFormat = "dilatron-sharded-checkpoint";
constexpr int kFormatVersion = 1;
constexpr const char* kManifestChecksumKey = "manifest_xxh3_64";
// Temporary directories of writers; any present when a checkpoint starts is from a crashed one.
constexpr const char* kTempPrefix = ".tmp-";
constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as huggingface/safetensors

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }
std::string shard_file_name(int rank) { return fmt::format("shard_{:05d}.safetensors", rank); }
std::string slice_tensor_name(const std::string& kind, int64_t logical_begin) {
  return fmt::format("{}/{}", kind, logical_begin);
}

std::optional<int64_t> parse_step_dir(std::string_view name) {
  constexpr std::string_view prefix = "step_";
  if (name.size() < prefix.size() + 8 || !name.starts_with(prefix)) return std::nullopt;
  const char* first = name.data() + prefix.size();
  const char* last = name.data() + name.size();
  if (!std::all_of(first, last, [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  int64_t step = -1;
  auto [end, ec] = std::from_chars(first, last, step);
  if (ec != std::errc() || end != last) return std::nullopt;
  return step;
}

// Checkpoint directories (complete or not) by step, newest first.
std::vector<std::pair<int64_t, std::string>> step_dirs(const std::string& checkpoints) {
  std::vector<std::pair<int64_t, std::string>> dirs;
  for (const std::string& name : list_dir(checkpoints)) {
    if (auto step = parse_step_dir(name)) dirs.emplace_back(*step, checkpoints + "/" + name);
  }
  std::sort(dirs.begin(), dirs.end(), std::greater<>());
  return dirs;
}

// What is wrong with a tensor table (empty if nothing): names unique, numel the product of
// the shape, logical offsets contiguous from 0.
std::string table_problem(const std::vector<CheckpointTensor>& tensors) {
  if (tensors.empty()) return "the tensor table is empty";
  std::set<std::string> names;
  int64_t offset = 0;
  for (const CheckpointTensor& t : tensors) {
    if (t.name.empty() || !names.insert(t.name).second) return fmt::format("tensor name \"{}\" is empty or repeated", t.name);
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || (d > 0 && numel > INT64_MAX / d)) return fmt::format("tensor {} has a bad dimension {}", t.name, d);
      numel *= d;
    }
    if (t.numel != numel) return fmt::format("tensor {}: numel {} is not the product of its shape ({})", t.name, t.numel, numel);
    if (t.logical_offset != offset)
      return fmt::format("tensor {}: logical offset {}, but the tensors before it end at {}", t.name, t.logical_offset, offset);
    offset += numel;
  }
  return {};
}

int64_t logical_size(const std::vector<CheckpointTensor>& tensors) {
  return tensors.back().logical_offset + tensors.back().numel;
}

struct Piece {
  int64_t begin, length;
  std::string where;  // for messages: the file or rank holding it
};

// What is wrong with a kind's pieces (empty if nothing): they must tile [0, total) exactly once.
std::string coverage_problem(const std::string& kind, std::vector<Piece> pieces, int64_t total) {
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
  int64_t covered = 0;
  for (const Piece& p : pieces) {
    if (p.begin > covered)
      return fmt::format("\"{}\" elements [{}, {}) are in no slice (a gap)", kind, covered, p.begin);
    if (p.begin < covered)
      return fmt::format("\"{}\" elements from {} are in two slices (an overlap; the second is {}'s)", kind, p.begin, p.where);
    covered = p.begin + p.length;
  }
  if (covered != total)
    return fmt::format("\"{}\" slices end at {} but the tensors hold {} elements", kind, covered, total);
  return {};
}

// Runs `step` and agrees over `world` whether it succeeded on every rank: a failure anywhere
// throws on every rank (the failing rank its own error), so no rank is left waiting in a
// later collective for one that gave up. Also a barrier.
void collectively(Communicator& world, const std::string& what, const std::function<void()>& step) {
  std::exception_ptr error;
  try {
    step();
  } catch (...) {
    error = std::current_exception();
  }
  int32_t failed = error ? 1 : 0;
  world.all_reduce(&failed, 1, DType::i32, ReduceOp::max);
  if (error) std::rethrow_exception(error);
  if (failed) throw Error(fmt::format("{}: failed on another rank (see its error)", what));
}

// Every rank's string, in rank order.
std::vector<std::string> all_gather_strings(Communicator& world, const std::string& mine) {
  int32_t size = static_cast<int32_t>(mine.size());
  std::vector<int32_t> sizes(static_cast<size_t>(world.size()));
  world.all_gather(&size, sizes.data(), 1, DType::i32);
  const int64_t words = (*std::max_element(sizes.begin(), sizes.end()) + 3) / 4;
  std::vector<int32_t> send(static_cast<size_t>(words), 0), recv(static_cast<size_t>(words * world.size()));
  std::memcpy(send.data(), mine.data(), mine.size());
  world.all_gather(send.data(), recv.data(), words, DType::i32);
  std::vector<std::string> out;
  for (int r = 0; r < world.size(); ++r)
    out.emplace_back(reinterpret_cast<const char*>(recv.data() + r * words), static_cast<size_t>(sizes[static_cast<size_t>(r)]));
  return out;
}

// The safetensors header of a shard: one F32 tensor (length) per slice, data in slice order.
std::string shard_header(const std::vector<OwnedSlice>& slices) {
  json header = json::object();
  header["__metadata__"] = {{"format", kFormat}};
  uint64_t offset = 0;
  for (const OwnedSlice& s : slices) {
    const std::string name = slice_tensor_name(s.kind, s.logical_begin);
    DILATRON_CHECK(!header.contains(name), "two slices named {} on one rank", name);
    const uint64_t bytes = static_cast<uint64_t>(s.length) * sizeof(float);
    header[name] = {{"dtype", "F32"}, {"shape", json::array({s.length})}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  return out + text;
}

uint64_t manifest_checksum(const json& manifest_without_checksum) {
  const std::string text = manifest_without_checksum.dump();
  return XXH3_64bits(text.data(), text.size());
}

// Moves the complete temporary directory to its final name. Replacing a checkpoint of the same
// step swaps the two directories atomically where the filesystem can (renameat2
// RENAME_EXCHANGE), so a valid directory of that step exists at every instant.
void install_dir(const std::string& temp, const std::string& final_dir, const std::string& checkpoints) {
  if (!path_exists(final_dir)) {
    DILATRON_CHECK_SYSCALL(::rename(temp.c_str(), final_dir.c_str()), "renaming {} to {}", temp, final_dir);
    fsync_dir(checkpoints);
    return;
  }
  if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
    DILATRON_CHECK_SYSCALL(errno == EINVAL || errno == ENOSYS || errno == ENOTSUP ? 0 : -1,
                           "exchanging {} and {}", temp, final_dir);
    // No exchange here: for the moment between the renames no directory of this step exists.
    const std::string aside = temp + "-replaced";
    DILATRON_CHECK_SYSCALL(::rename(final_dir.c_str(), aside.c_str()), "renaming {} to {}", final_dir, aside);
    DILATRON_CHECK_SYSCALL(::rename(temp.c_str(), final_dir.c_str()), "renaming {} to {}", temp, final_dir);
    fsync_dir(checkpoints);
    remove_tree(aside);
    return;
  }
  fsync_dir(checkpoints);
  remove_tree(temp);  // now the replaced checkpoint
}

// ---- Reading and verifying -------------------------------------------------------------

struct ManifestSlice {
  std::string kind;
  int64_t logical_begin, length, file_offset;
};

struct ManifestFile {
  std::string name;
  std::vector<ManifestSlice> slices;
};

struct Manifest {
  int64_t step = 0;
  json metadata;
  std::vector<CheckpointTensor> tensors;
  std::vector<ManifestFile> files;  // by rank
};

// Throws the InputError of a damaged checkpoint, naming the file.
struct Corrupt {
  std::string path;
  [[noreturn]] void operator()(const std::string& what) const {
    throw InputError(fmt::format("{}: {}; the checkpoint is corrupt or incomplete, resume from another", path, what));
  }
};

const json& member(const json& object, const char* key, bool (json::*is_kind)() const, const char* kind,
                   const Corrupt& corrupt) {
  if (!object.is_object()) corrupt(fmt::format("expected an object holding \"{}\"", key));
  auto it = object.find(key);
  if (it == object.end() || !((*it).*is_kind)()) corrupt(fmt::format("\"{}\" is missing or not {}", key, kind));
  return *it;
}

int64_t member_count(const json& object, const char* key, const Corrupt& corrupt) {
  const json& value = member(object, key, &json::is_number_integer, "an integer", corrupt);
  const int64_t n = value.get<int64_t>();
  if (n < 0) corrupt(fmt::format("\"{}\" is negative ({})", key, n));
  return n;
}

// Confirms that the shard's own safetensors header places each slice where the manifest says.
void check_shard_header(int fd, const std::string& path, uint64_t file_bytes, const ManifestFile& file) {
  const Corrupt corrupt{path};
  if (file_bytes < 8) corrupt("too short for a safetensors file");
  uint64_t n = 0;
  pread_exact(fd, &n, 8, 0, path);
  if (n > kMaxHeaderBytes || n > file_bytes - 8) corrupt(fmt::format("safetensors header length {} exceeds the file", n));
  std::string text(n, '\0');
  pread_exact(fd, text.data(), n, 8, path);
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    corrupt(fmt::format("the safetensors header is not valid JSON ({})", e.what()));
  }
  if (!header.is_object()) corrupt("the safetensors header is not a JSON object");
  const size_t tensors = header.size() - (header.contains("__metadata__") ? 1 : 0);
  if (tensors != file.slices.size())
    corrupt(fmt::format("holds {} tensors, the manifest records {} slices", tensors, file.slices.size()));
  for (const ManifestSlice& s : file.slices) {
    const std::string name = slice_tensor_name(s.kind, s.logical_begin);
    const uint64_t bytes = static_cast<uint64_t>(s.length) * sizeof(float);
    auto it = header.find(name);
    const json expected_shape = json::array({s.length});
    if (it == header.end() || !it->is_object() || it->value("dtype", json()) != "F32" ||
        it->value("shape", json()) != expected_shape || !it->contains("data_offsets"))
      corrupt(fmt::format("has no F32 tensor \"{}\" of shape [{}]", name, s.length));
    const json& offsets = (*it)["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned() ||
        8 + n + offsets[0].get<uint64_t>() != static_cast<uint64_t>(s.file_offset) ||
        offsets[1].get<uint64_t>() - offsets[0].get<uint64_t>() != bytes || s.file_offset + bytes > file_bytes)
      corrupt(fmt::format("tensor \"{}\" is not at byte {} with {} bytes as the manifest records", name, s.file_offset, bytes));
  }
}

// Parses and validates dir/manifest.json and the shard files it lists: their size, their
// safetensors headers and, if verify_checksums, their digests (reading every byte).
Manifest load_manifest(const std::string& dir, bool verify_checksums) {
  const std::string manifest_path = dir + "/" + kManifestFile;
  const Corrupt corrupt{manifest_path};
  std::optional<std::string> text = read_whole_file(manifest_path);
  if (!text) corrupt("missing");
  json manifest;
  try {
    manifest = json::parse(*text);
  } catch (const json::exception& e) {
    corrupt(fmt::format("not valid JSON ({})", e.what()));
  }
  const std::string recorded_checksum =
      member(manifest, kManifestChecksumKey, &json::is_string, "a string", corrupt).get<std::string>();
  manifest.erase(kManifestChecksumKey);
  if (hex64(manifest_checksum(manifest)) != recorded_checksum) corrupt("does not match its checksum");
  if (member(manifest, "format", &json::is_string, "a string", corrupt) != kFormat ||
      member(manifest, "version", &json::is_number_integer, "an integer", corrupt) != kFormatVersion)
    corrupt(fmt::format("not a \"{}\" manifest of version {}", kFormat, kFormatVersion));

  Manifest out;
  out.step = member_count(manifest, "step", corrupt);
  out.metadata = manifest.contains("metadata") ? manifest["metadata"] : json::object();
  for (const json& t : member(manifest, "tensors", &json::is_array, "an array", corrupt)) {
    CheckpointTensor tensor;
    tensor.name = member(t, "name", &json::is_string, "a string", corrupt).get<std::string>();
    for (const json& d : member(t, "shape", &json::is_array, "an array", corrupt)) {
      if (!d.is_number_integer()) corrupt(fmt::format("tensor {} has a non-integer dimension", tensor.name));
      tensor.shape.push_back(d.get<int64_t>());
    }
    if (member(t, "dtype", &json::is_string, "a string", corrupt) != "F32")
      corrupt(fmt::format("tensor {} is not F32", tensor.name));
    tensor.logical_offset = member_count(t, "logical_offset", corrupt);
    tensor.numel = member_count(t, "numel", corrupt);
    out.tensors.push_back(std::move(tensor));
  }
  if (std::string problem = table_problem(out.tensors); !problem.empty()) corrupt(problem);
  const int64_t total = logical_size(out.tensors);

  const json& files = member(manifest, "files", &json::is_array, "an array", corrupt);
  if (member_count(manifest, "world_size", corrupt) != static_cast<int64_t>(files.size()) || files.empty())
    corrupt(fmt::format("world_size is not the number of files ({})", files.size()));
  std::map<std::string, std::vector<Piece>> by_kind;
  for (size_t rank = 0; rank < files.size(); ++rank) {
    const json& f = files[rank];
    ManifestFile file;
    file.name = member(f, "file", &json::is_string, "a string", corrupt).get<std::string>();
    if (file.name != shard_file_name(static_cast<int>(rank)))
      corrupt(fmt::format("file {} is listed where {} belongs", file.name, shard_file_name(static_cast<int>(rank))));
    for (const json& s : member(f, "slices", &json::is_array, "an array", corrupt)) {
      ManifestSlice slice{member(s, "kind", &json::is_string, "a string", corrupt).get<std::string>(), member_count(s, "logical_begin", corrupt),
                          member_count(s, "length", corrupt), member_count(s, "offset", corrupt)};
      if (slice.length == 0 || slice.length > total) corrupt(fmt::format("a slice of {} has length {}", file.name, slice.length));
      by_kind[slice.kind].push_back({slice.logical_begin, slice.length, file.name});
      file.slices.push_back(std::move(slice));
    }
    const uint64_t bytes = static_cast<uint64_t>(member_count(f, "bytes", corrupt));
    const std::string checksum = member(f, "xxh3_64", &json::is_string, "a string", corrupt).get<std::string>();

    const std::string path = dir + "/" + file.name;
    const Corrupt corrupt_file{path};
    const int raw = open_for_reading(path);
    if (raw < 0) corrupt_file("missing");
    Fd fd(raw);
    struct stat st;
    DILATRON_CHECK_SYSCALL(::fstat(fd.get(), &st), "stat {}", path);
    if (static_cast<uint64_t>(st.st_size) != bytes)
      corrupt_file(fmt::format("has {} bytes, the manifest records {} (truncated or overwritten)", st.st_size, bytes));
    if (verify_checksums) {
      std::optional<FileDigest> digest = digest_file(path);
      if (!digest) corrupt_file("missing");
      if (digest->bytes != bytes || hex64(digest->xxh3) != checksum) corrupt_file("does not match its checksum");
    }
    check_shard_header(fd.get(), path, bytes, file);
    out.files.push_back(std::move(file));
  }
  if (by_kind.empty()) corrupt("records no slices");
  for (auto& [kind, pieces] : by_kind) {
    if (std::string problem = coverage_problem(kind, std::move(pieces), total); !problem.empty()) corrupt(problem);
  }
  return out;
}

bool verifies(const std::string& dir) {
  try {
    ShardedCheckpoint::open(dir);
    return true;
  } catch (const InputError& e) {
    spdlog::warn("skipping checkpoint {}: {}", dir, e.what());
    return false;
  }
}

// ---- Writing ---------------------------------------------------------------------------

// Deletes only checkpoints older than the oldest of the `keep` newest valid ones, so at least
// `keep` valid checkpoints remain and nothing newer than a valid one is removed (an invalid
// directory among the newest stays: it may be inspected, and it costs no valid one).
// Directories of steps after `step` (abandoned by a run resumed from further back) are
// neither counted nor removed. The one just written counts as valid without reading it back:
// its digests were computed as it was written. The others are checked structurally
// (manifest, sizes, headers) but not re-read for checksums: that would read every kept
// checkpoint at every save.
void prune(const std::string& checkpoints, int64_t step, int keep) {
  const auto dirs = step_dirs(checkpoints);
  std::optional<int64_t> oldest_kept;
  int valid = 0;
  for (const auto& [dir_step, dir] : dirs) {
    if (dir_step > step) continue;
    bool ok = dir_step == step;
    if (!ok) {
      try {
        load_manifest(dir, /*verify_checksums=*/false);
        ok = true;
      } catch (const InputError&) {
      }
    }
    if (ok && ++valid == keep) {
      oldest_kept = dir_step;
      break;
    }
  }
  if (!oldest_kept) return;
  for (const auto& [dir_step, dir] : dirs) {
    if (dir_step < *oldest_kept) remove_tree(dir);
  }
}

struct WriteRecord {
  std::string file;
  FileDigest digest;
  std::vector<ManifestSlice> slices;
};

json record_json(const WriteRecord& r) {
  json slices = json::array();
  for (const ManifestSlice& s : r.slices)
    slices.push_back({{"kind", s.kind}, {"logical_begin", s.logical_begin}, {"length", s.length}, {"offset", s.file_offset}});
  return {{"file", r.file}, {"bytes", r.digest.bytes}, {"xxh3_64", hex64(r.digest.xxh3)}, {"slices", slices}};
}

// Rank 0, once every shard file is written: checks the slices tile each kind, writes the
// manifest, moves the directory to its final name and points `latest` at it.
void commit(const std::vector<std::string>& records, const std::string& temp, const std::string& final_dir,
            const std::string& checkpoints, int64_t step, const std::vector<CheckpointTensor>& tensors,
            const json& metadata, int keep) {
  const int64_t total = logical_size(tensors);
  json files = json::array();
  std::map<std::string, std::vector<Piece>> by_kind;
  for (size_t rank = 0; rank < records.size(); ++rank) {
    json record = json::parse(records[rank]);
    const std::string path = temp + "/" + record["file"].get<std::string>();
    struct stat st;
    DILATRON_CHECK_SYSCALL(::stat(path.c_str(), &st), "stat {} (is the run directory on a filesystem every rank shares?)", path);
    DILATRON_CHECK(static_cast<uint64_t>(st.st_size) == record["bytes"].get<uint64_t>(),
                   "rank {} wrote {} bytes to {} but rank 0 sees {}", rank, record["bytes"].get<uint64_t>(), path, st.st_size);
    for (const json& s : record["slices"])
      by_kind[s["kind"].get<std::string>()].push_back(
          {s["logical_begin"].get<int64_t>(), s["length"].get<int64_t>(), fmt::format("rank {}", rank)});
    files.push_back(std::move(record));
  }
  DILATRON_CHECK(!by_kind.empty(), "checkpoint of step {}: no rank passed a slice", step);
  for (auto& [kind, pieces] : by_kind) {
    const std::string problem = coverage_problem(kind, std::move(pieces), total);
    DILATRON_CHECK(problem.empty(), "checkpoint of step {}: the slices must cover each kind exactly once: {}", step, problem);
  }

  json table = json::array();
  for (const CheckpointTensor& t : tensors)
    table.push_back({{"name", t.name}, {"shape", t.shape}, {"dtype", "F32"}, {"logical_offset", t.logical_offset}, {"numel", t.numel}});
  json kinds = json::array();
  for (const auto& [kind, unused] : by_kind) kinds.push_back(kind);
  json manifest = {{"format", kFormat},      {"version", kFormatVersion},         {"step", step},
                   {"world_size", records.size()}, {"logical_numel", total}, {"kinds", kinds},
                   {"tensors", table},       {"files", files},                    {"metadata", metadata}};
  manifest[kManifestChecksumKey] = hex64(manifest_checksum(manifest));
  const std::string text = manifest.dump(2) + "\n";
  write_new_file_synced(temp + "/" + kManifestFile, {text});
  fsync_dir(temp);

  install_dir(temp, final_dir, checkpoints);
  const std::string latest = std::filesystem::path(final_dir).filename().string() + "\n";
  replace_file_atomically(checkpoints + "/" + kLatestFile, {latest});
  prune(checkpoints, step, keep);
}

}  // namespace

std::string write_sharded_checkpoint(Communicator& world, const std::string& run_dir, int64_t step,
                                     const std::vector<CheckpointTensor>& tensors,
                                     const std::vector<OwnedSlice>& slices, const nlohmann::json& metadata,
                                     int keep) {
  const std::string checkpoints = run_dir + "/checkpoints";
  const std::string name = step_dir_name(step);
  const std::string temp = checkpoints + "/" + kTempPrefix + name;
  const std::string final_dir = checkpoints + "/" + name;
  const bool root = world.rank() == 0;
  std::vector<OwnedSlice> nonempty;
  for (const OwnedSlice& s : slices) {
    if (s.length != 0) nonempty.push_back(s);
  }
  try {
    collectively(world, "preparing checkpoint " + final_dir, [&] {
      DILATRON_CHECK(step >= 0 && keep >= 1, "step {} keep {}", step, keep);
      const std::string problem = table_problem(tensors);
      DILATRON_CHECK(problem.empty(), "checkpoint tensor table: {}", problem);
      for (const OwnedSlice& s : nonempty) {
        DILATRON_CHECK(!s.kind.empty() && s.logical_begin >= 0 && s.length > 0 && s.data != nullptr &&
                           s.logical_begin + s.length <= logical_size(tensors),
                       "slice \"{}\" [{}, +{}) outside the {} elements or without data", s.kind, s.logical_begin,
                       s.length, logical_size(tensors));
      }
      if (root) {
        make_dir(run_dir);
        make_dir(checkpoints);
        // One job writes a run directory at a time, so a temporary directory is a crashed writer's.
        for (const std::string& entry : list_dir(checkpoints)) {
          if (entry.starts_with(kTempPrefix)) remove_tree(checkpoints + "/" + entry);
        }
        DILATRON_CHECK_SYSCALL(::mkdir(temp.c_str(), 0755), "mkdir {}", temp);
      }
    });

    WriteRecord record;
    record.file = shard_file_name(world.rank());
    collectively(world, "writing the shards of " + final_dir, [&] {
      const std::string header = shard_header(nonempty);
      std::vector<std::string_view> pieces = {header};
      int64_t offset = static_cast<int64_t>(header.size());
      for (const OwnedSlice& s : nonempty) {
        pieces.emplace_back(reinterpret_cast<const char*>(s.data), static_cast<size_t>(s.length) * sizeof(float));
        record.slices.push_back({s.kind, s.logical_begin, s.length, offset});
        offset += s.length * static_cast<int64_t>(sizeof(float));
      }
      record.digest = write_new_file_synced(temp + "/" + record.file, pieces);
    });

    const std::vector<std::string> records = all_gather_strings(world, record_json(record).dump());
    collectively(world, "committing " + final_dir, [&] {
      if (root) commit(records, temp, final_dir, checkpoints, step, tensors, metadata, keep);
    });
  } catch (...) {
    // No final directory for a failed checkpoint; after the rename `temp` no longer exists.
    if (root) {
      std::error_code ignored;
      std::filesystem::remove_all(temp, ignored);
    }
    throw;
  }
  return final_dir;
}

ShardedCheckpoint ShardedCheckpoint::open(const std::string& dir) {
  Manifest manifest = load_manifest(dir, /*verify_checksums=*/true);
  ShardedCheckpoint checkpoint;
  checkpoint.dir_ = dir;
  checkpoint.step_ = manifest.step;
  checkpoint.world_size_ = static_cast<int>(manifest.files.size());
  checkpoint.metadata_ = std::move(manifest.metadata);
  checkpoint.tensors_ = std::move(manifest.tensors);
  for (const ManifestFile& file : manifest.files) {
    for (const ManifestSlice& s : file.slices)
      checkpoint.slices_[s.kind].push_back({file.name, s.logical_begin, s.length, s.file_offset});
  }
  for (auto& [kind, pieces] : checkpoint.slices_) {
    std::sort(pieces.begin(), pieces.end(),
              [](const FileSlice& a, const FileSlice& b) { return a.logical_begin < b.logical_begin; });
  }
  return checkpoint;
}

bool ShardedCheckpoint::has_kind(const std::string& kind) const { return slices_.count(kind) != 0; }

void ShardedCheckpoint::read(const std::string& kind, int64_t logical_begin, int64_t length, float* dst) const {
  auto it = slices_.find(kind);
  DILATRON_CHECK_INPUT(it != slices_.end(), "checkpoint {} holds no \"{}\" state", dir_, kind);
  const int64_t total = logical_size(tensors_);
  DILATRON_CHECK_INPUT(logical_begin >= 0 && length >= 0 && logical_begin <= total - length,
                       "checkpoint {}: elements [{}, {}) of \"{}\" are outside its {} elements", dir_, logical_begin,
                       logical_begin + length, kind, total);
  const std::vector<FileSlice>& pieces = it->second;
  // The last piece starting at or before logical_begin.
  auto piece = std::upper_bound(pieces.begin(), pieces.end(), logical_begin,
                                [](int64_t at, const FileSlice& p) { return at < p.logical_begin; });
  if (piece != pieces.begin()) --piece;
  std::map<std::string, std::unique_ptr<Fd>> open_files;
  for (int64_t at = logical_begin, end = logical_begin + length; at < end; ++piece) {
    DILATRON_CHECK_INPUT(piece != pieces.end() && piece->logical_begin <= at && at < piece->logical_begin + piece->length,
                         "checkpoint {}: element {} of \"{}\" is in no shard file", dir_, at, kind);
    const std::string path = dir_ + "/" + piece->file;
    std::unique_ptr<Fd>& fd = open_files[path];
    if (!fd) {
      const int raw = open_for_reading(path);
      DILATRON_CHECK_INPUT(raw >= 0, "checkpoint {}: {} is missing", dir_, path);
      fd = std::make_unique<Fd>(raw);
    }
    const int64_t n = std::min(end, piece->logical_begin + piece->length) - at;
    pread_exact(fd->get(), dst + (at - logical_begin), static_cast<uint64_t>(n) * sizeof(float),
                static_cast<uint64_t>(piece->file_offset + (at - piece->logical_begin) * static_cast<int64_t>(sizeof(float))),
                path);
    at += n;
  }
}

std::optional<std::string> find_latest_checkpoint(const std::string& run_dir) {
  const std::string checkpoints = run_dir + "/checkpoints";
  const std::string latest_path = checkpoints + "/" + kLatestFile;
  std::optional<std::string> from_latest;
  std::string tried;
  int64_t latest_step = -1;
  if (std::optional<std::string> text = read_whole_file(latest_path)) {
    std::string name = *text;
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    const std::optional<int64_t> step = parse_step_dir(name);
    if (!step) {
      spdlog::warn("{} holds \"{}\", not a checkpoint directory name; looking for the newest valid checkpoint",
                   latest_path, name.substr(0, 64));
    } else if (tried = checkpoints + "/" + name; !path_exists(tried)) {
      spdlog::warn("{} names {}, which does not exist; looking for the newest valid checkpoint", latest_path, tried);
    } else if (verifies(tried)) {
      from_latest = tried;
      latest_step = *step;
    }
  }
  for (const auto& [step, dir] : step_dirs(checkpoints)) {
    if (step <= latest_step) break;
    if (dir == tried) continue;
    if (verifies(dir)) {
      // A crash between renaming a checkpoint into place and updating `latest` leaves it stale.
      if (from_latest) spdlog::warn("{} names {}, but the newer {} is complete; using it", latest_path, *from_latest, dir);
      return dir;
    }
  }
  return from_latest;
}

void export_safetensors(const ShardedCheckpoint& checkpoint, const std::string& out_path) {
  DILATRON_CHECK_INPUT(checkpoint.has_kind("params"), "checkpoint {} holds no \"params\" to export", checkpoint.dir());
  const json& metadata = checkpoint.metadata();
  DILATRON_CHECK_INPUT(metadata.is_object() && metadata.contains("model"),
                       "checkpoint {}: its metadata has no \"model\" section for config.json", checkpoint.dir());
  std::vector<NamedTensor> tensors;
  for (const CheckpointTensor& t : checkpoint.tensors()) {
    Tensor tensor = Tensor::empty(t.shape, DType::f32);
    checkpoint.read("params", t.logical_offset, t.numel, tensor.data<float>());
    tensors.push_back({t.name, std::move(tensor)});
  }
  const std::string header =
      safetensors_header(tensors, {{"format", "dilatron"}, {"step", std::to_string(checkpoint.step())}});
  std::vector<std::string_view> pieces = {header};
  for (const NamedTensor& t : tensors) pieces.emplace_back(static_cast<const char*>(t.tensor.raw()), t.tensor.nbytes());
  replace_file_atomically(out_path, pieces);

  const std::filesystem::path parent = std::filesystem::path(out_path).parent_path();
  const std::string config = metadata["model"].dump(2) + "\n";
  replace_file_atomically((parent.empty() ? std::filesystem::path("config.json") : parent / "config.json").string(), {config});
}

}  // namespace dilatron
