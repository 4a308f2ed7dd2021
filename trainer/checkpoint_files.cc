#include "trainer/checkpoint_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>

#include <spdlog/spdlog.h>

#include "core/check.h"

namespace dilatron {

namespace {

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kStateFile = "state.json";
constexpr const char* kStateChecksumKey = "state_xxh3_64";
constexpr const char* kTempPrefix = ".tmp-";
constexpr const char* kAsidePrefix = ".old-";

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closing can report a deferred write error, so the writer checks it.
  void close(const std::string& path) {
    int fd = fd_;
    fd_ = -1;
    DILATRON_CHECK_SYSCALL(::close(fd), "closing {}", path);
  }

 private:
  int fd_;
};

std::string hex64(uint64_t h) { return fmt::format("{:016x}", h); }

void fsync_dir(const std::string& path) {
  Fd dir(DILATRON_CHECK_SYSCALL(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "opening {}", path));
  DILATRON_CHECK_SYSCALL(::fsync(dir.get()), "fsync {}", path);
  dir.close(path);
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return;
  DILATRON_CHECK_SYSCALL(errno == EEXIST ? 0 : -1, "mkdir {}", path);
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  DILATRON_CHECK(!ec, "removing {}: {}", path, ec.message());
}

struct FileRecord {
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
};

// Writes the pieces in order, fsyncs, and returns the size and checksum of what was written.
FileRecord write_synced(const std::string& path, const std::vector<std::string_view>& pieces) {
  Fd fd(DILATRON_CHECK_SYSCALL(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644),
                               "creating {}", path));
  XXH3_state_t* hash = XXH3_createState();
  DILATRON_CHECK(hash != nullptr, "out of memory");
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> hash_owner(hash, XXH3_freeState);
  XXH3_64bits_reset(hash);
  FileRecord record;
  for (std::string_view piece : pieces) {
    XXH3_64bits_update(hash, piece.data(), piece.size());
    record.bytes += piece.size();
    while (!piece.empty()) {
      // One write() moves at most ~2 GiB on Linux.
      const size_t chunk = std::min<size_t>(piece.size(), size_t{1} << 30);
      ssize_t n = ::write(fd.get(), piece.data(), chunk);
      if (n < 0 && errno == EINTR) continue;
      DILATRON_CHECK_SYSCALL(n, "writing {}", path);
      piece.remove_prefix(static_cast<size_t>(n));
    }
  }
  record.xxh3 = XXH3_64bits_digest(hash);
  DILATRON_CHECK_SYSCALL(::fsync(fd.get()), "fsync {}", path);
  fd.close(path);
  return record;
}

std::optional<int64_t> parse_step_dir(const std::string& name) {
  constexpr std::string_view prefix = "step_";
  if (name.size() < prefix.size() + 8 || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  int64_t step = -1;
  const char* first = name.data() + prefix.size();
  const char* last = name.data() + name.size();
  if (!std::all_of(first, last, [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  auto [end, ec] = std::from_chars(first, last, step);
  if (ec != std::errc() || end != last) return std::nullopt;
  return step;
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr && errno == ENOENT) return names;
  DILATRON_CHECK(dir != nullptr, "opening directory {}: {}", path, std::strerror(errno));
  auto close_dir = [](DIR* d) { ::closedir(d); };
  std::unique_ptr<DIR, decltype(close_dir)> owner(dir, close_dir);
  while (true) {
    errno = 0;
    dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      DILATRON_CHECK(errno == 0, "reading directory {}: {}", path, std::strerror(errno));
      break;
    }
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  return names;
}

// Checkpoint directories by step, newest first.
std::vector<std::pair<int64_t, std::string>> step_dirs(const std::string& checkpoints) {
  std::vector<std::pair<int64_t, std::string>> dirs;
  for (const std::string& name : list_dir(checkpoints)) {
    if (auto step = parse_step_dir(name)) dirs.emplace_back(*step, checkpoints + "/" + name);
  }
  std::sort(dirs.begin(), dirs.end(), std::greater<>());
  return dirs;
}

// A temporary or set-aside directory whose writer (named by the pid suffix) no longer runs.
bool is_stale(const std::string& name) {
  if (name.rfind(kTempPrefix, 0) != 0 && name.rfind(kAsidePrefix, 0) != 0) return false;
  const size_t dash = name.rfind('-');
  int pid = 0;
  auto [end, ec] = std::from_chars(name.data() + dash + 1, name.data() + name.size(), pid);
  if (ec != std::errc() || end != name.data() + name.size() || pid <= 0) return true;
  return pid == ::getpid() || (::kill(pid, 0) != 0 && errno == ESRCH);
}

uint64_t state_checksum(const nlohmann::json& state_without_checksum) {
  const std::string text = state_without_checksum.dump();
  return XXH3_64bits(text.data(), text.size());
}

// A read-only mapping of a whole file: checkpoints can be larger than memory twice over.
class MappedFile {
 public:
  MappedFile(const std::string& path, const std::string& dir, const std::string& name) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    DILATRON_CHECK_INPUT(fd_ >= 0, "checkpoint {}: cannot open {}: {}; the checkpoint is incomplete",
                         dir, name, std::strerror(errno));
    struct stat st;
    DILATRON_CHECK_SYSCALL(::fstat(fd_, &st), "stat {}", path);
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      DILATRON_CHECK(p != MAP_FAILED, "mmap {}: {}", path, std::strerror(errno));
      data_ = static_cast<const char*>(p);
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  std::string_view bytes() const { return {data_, size_}; }

 private:
  int fd_ = -1;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// Verifies state.json and every listed file; parses the tensors only when asked.
LoadedCheckpoint load_checkpoint(const std::string& dir, bool with_tensors) {
  LoadedCheckpoint loaded;
  loaded.dir = dir;
  {
    MappedFile state_file(dir + "/" + kStateFile, dir, kStateFile);
    try {
      loaded.state = nlohmann::json::parse(state_file.bytes());
    } catch (const nlohmann::json::exception& e) {
      throw InputError(fmt::format("checkpoint {}: {} is not valid JSON ({}); the checkpoint is corrupt",
                                   dir, kStateFile, e.what()));
    }
  }
  nlohmann::json& state = loaded.state;
  auto fail = [&](const std::string& what) {
    throw InputError(fmt::format("checkpoint {}: {}; the checkpoint is corrupt, resume from another", dir, what));
  };
  if (!state.is_object() || !state.contains(kStateChecksumKey) || !state[kStateChecksumKey].is_string())
    fail(fmt::format("{} has no \"{}\"", kStateFile, kStateChecksumKey));
  const std::string recorded = state[kStateChecksumKey].get<std::string>();
  state.erase(kStateChecksumKey);
  if (hex64(state_checksum(state)) != recorded)
    fail(fmt::format("{} does not match its checksum", kStateFile));
  if (!state.contains("step") || !state["step"].is_number_integer()) fail("state.json has no integer \"step\"");
  loaded.step = state["step"].get<int64_t>();
  if (!state.contains("files") || !state["files"].is_object() || !state["files"].contains(kModelFile))
    fail(fmt::format("state.json lists no {}", kModelFile));

  for (const auto& [name, record] : state["files"].items()) {
    if (name.find('/') != std::string::npos || !record.is_object() ||
        !record.contains("bytes") || !record["bytes"].is_number_unsigned() ||
        !record.contains("xxh3_64") || !record["xxh3_64"].is_string())
      fail(fmt::format("state.json has a malformed entry for \"{}\"", name));
    MappedFile file(dir + "/" + name, dir, name);
    const uint64_t bytes = record["bytes"].get<uint64_t>();
    if (file.bytes().size() != bytes)
      fail(fmt::format("{} has {} bytes, state.json records {} (truncated or overwritten)", name,
                       file.bytes().size(), bytes));
    if (hex64(XXH3_64bits(file.bytes().data(), file.bytes().size())) != record["xxh3_64"].get<std::string>())
      fail(fmt::format("{} does not match its checksum", name));
    if (with_tensors && name == kModelFile) loaded.tensors = safetensors_parse(file.bytes(), dir + "/" + name);
  }
  state.erase("files");
  return loaded;
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::string write_checkpoint(const std::string& run_dir, int64_t step,
                             const std::vector<NamedTensor>& tensors, const nlohmann::json& state,
                             int keep) {
  DILATRON_CHECK(step >= 0 && keep >= 1 && state.is_object(), "step {} keep {}", step, keep);
  const std::string checkpoints = run_dir + "/checkpoints";
  make_dir(run_dir);
  make_dir(checkpoints);
  for (const std::string& name : list_dir(checkpoints)) {
    if (is_stale(name)) remove_tree(checkpoints + "/" + name);
  }

  const std::string name = checkpoint_dir_name(step);
  const std::string pid = std::to_string(::getpid());
  const std::string temp = checkpoints + "/" + kTempPrefix + name + "-" + pid;
  const std::string final_dir = checkpoints + "/" + name;
  DILATRON_CHECK_SYSCALL(::mkdir(temp.c_str(), 0755), "mkdir {}", temp);

  std::vector<std::string_view> pieces;
  const std::string header = safetensors_header(tensors, {});
  pieces.push_back(header);
  for (const auto& t : tensors) pieces.emplace_back(static_cast<const char*>(t.tensor.raw()), t.tensor.nbytes());
  const FileRecord model = write_synced(temp + "/" + kModelFile, pieces);

  nlohmann::json full = state;
  full["step"] = step;
  full["files"] = {{kModelFile, {{"bytes", model.bytes}, {"xxh3_64", hex64(model.xxh3)}}}};
  full.erase(kStateChecksumKey);
  full[kStateChecksumKey] = hex64(state_checksum(full));
  const std::string state_text = full.dump(2) + "\n";
  write_synced(temp + "/" + kStateFile, {state_text});
  fsync_dir(temp);

  struct stat st;
  if (::stat(final_dir.c_str(), &st) == 0) {
    const std::string aside = checkpoints + "/" + kAsidePrefix + name + "-" + pid;
    DILATRON_CHECK_SYSCALL(::rename(final_dir.c_str(), aside.c_str()), "renaming {} to {}", final_dir, aside);
    DILATRON_CHECK_SYSCALL(::rename(temp.c_str(), final_dir.c_str()), "renaming {} to {}", temp, final_dir);
    fsync_dir(checkpoints);
    remove_tree(aside);
  } else {
    DILATRON_CHECK_SYSCALL(errno == ENOENT ? 0 : -1, "stat {}", final_dir);
    DILATRON_CHECK_SYSCALL(::rename(temp.c_str(), final_dir.c_str()), "renaming {} to {}", temp, final_dir);
    fsync_dir(checkpoints);
  }

  // Newest first: the one just written and the keep - 1 newest other complete ones stay.
  // Incomplete directories (no state.json) are neither counted nor removed.
  int remaining = 0;
  for (const auto& [dir_step, dir] : step_dirs(checkpoints)) {
    if (::access((dir + "/" + kStateFile).c_str(), F_OK) != 0) continue;
    if (dir == final_dir || remaining < keep - 1) {
      remaining += dir != final_dir ? 1 : 0;
      continue;
    }
    remove_tree(dir);
  }
  return final_dir;
}

LoadedCheckpoint read_checkpoint(const std::string& dir) { return load_checkpoint(dir, true); }

std::optional<std::string> find_latest_checkpoint(const std::string& run_dir) {
  for (const auto& [step, dir] : step_dirs(run_dir + "/checkpoints")) {
    try {
      load_checkpoint(dir, false);
      return dir;
    } catch (const InputError& e) {
      spdlog::warn("skipping checkpoint {}: {}", dir, e.what());
    }
  }
  return std::nullopt;
}

}  // namespace dilatron
