#include "trainer/durable_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/check.h"

namespace dilatron {

namespace {

// One read() or write() moves at most ~2 GiB on Linux.
constexpr size_t kMaxIo = size_t{1} << 30;

using Xxh3State = std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)>;

Xxh3State new_xxh3() {
  Xxh3State state(XXH3_createState(), XXH3_freeState);
  DILATRON_CHECK(state != nullptr, "out of memory");
  XXH3_64bits_reset(state.get());
  return state;
}

void write_all(int fd, std::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), std::min(bytes.size(), kMaxIo));
    if (n < 0 && errno == EINTR) continue;
    DILATRON_CHECK_SYSCALL(n, "writing {}", path);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

void Fd::close(const std::string& path) {
  const int fd = fd_;
  fd_ = -1;
  DILATRON_CHECK_SYSCALL(::close(fd), "closing {}", path);
}

std::string hex64(uint64_t value) { return fmt::format("{:016x}", value); }

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

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr && errno == ENOENT) return names;
  DILATRON_CHECK(dir != nullptr, "opening directory {}: {}", path, std::strerror(errno));
  std::unique_ptr<DIR, int (*)(DIR*)> owner(dir, ::closedir);
  while (true) {
    errno = 0;
    const dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      DILATRON_CHECK(errno == 0, "reading directory {}: {}", path, std::strerror(errno));
      break;
    }
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  return names;
}

bool path_exists(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return true;
  DILATRON_CHECK_SYSCALL(errno == ENOENT || errno == ENOTDIR ? 0 : -1, "stat {}", path);
  return false;
}

FileDigest write_new_file_synced(const std::string& path, const std::vector<std::string_view>& pieces) {
  Fd fd(DILATRON_CHECK_SYSCALL(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644),
                               "creating {}", path));
  Xxh3State hash = new_xxh3();
  FileDigest digest;
  for (std::string_view piece : pieces) {
    XXH3_64bits_update(hash.get(), piece.data(), piece.size());
    digest.bytes += piece.size();
    write_all(fd.get(), piece, path);
  }
  digest.xxh3 = XXH3_64bits_digest(hash.get());
  DILATRON_CHECK_SYSCALL(::fsync(fd.get()), "fsync {}", path);
  fd.close(path);
  return digest;
}

void replace_file_atomically(const std::string& path, const std::vector<std::string_view>& pieces) {
  const std::string temp = path + ".tmp";
  remove_tree(temp);
  write_new_file_synced(temp, pieces);
  DILATRON_CHECK_SYSCALL(::rename(temp.c_str(), path.c_str()), "renaming {} to {}", temp, path);
  const std::string parent = std::filesystem::path(path).parent_path().string();
  fsync_dir(parent.empty() ? "." : parent);
}

int open_for_reading(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return -1;
  return DILATRON_CHECK_SYSCALL(fd, "opening {}", path);
}

std::optional<FileDigest> digest_file(const std::string& path) {
  const int raw = open_for_reading(path);
  if (raw < 0) return std::nullopt;
  Fd fd(raw);
  Xxh3State hash = new_xxh3();
  FileDigest digest;
  std::vector<char> buffer(size_t{1} << 22);
  while (true) {
    const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    DILATRON_CHECK_SYSCALL(n, "reading {}", path);
    if (n == 0) break;
    XXH3_64bits_update(hash.get(), buffer.data(), static_cast<size_t>(n));
    digest.bytes += static_cast<uint64_t>(n);
  }
  digest.xxh3 = XXH3_64bits_digest(hash.get());
  return digest;
}

std::optional<std::string> read_whole_file(const std::string& path) {
  const int raw = open_for_reading(path);
  if (raw < 0) return std::nullopt;
  Fd fd(raw);
  std::string contents;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    DILATRON_CHECK_SYSCALL(n, "reading {}", path);
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  return contents;
}

void pread_exact(int fd, void* dst, uint64_t bytes, uint64_t offset, const std::string& path) {
  char* out = static_cast<char*>(dst);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, out, std::min<uint64_t>(bytes, kMaxIo), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    DILATRON_CHECK_SYSCALL(n, "reading {}", path);
    DILATRON_CHECK_INPUT(n > 0, "{}: the file ends at byte {}, before the {} bytes the manifest records there; it was truncated",
                         path, offset, bytes);
    out += n;
    offset += static_cast<uint64_t>(n);
    bytes -= static_cast<uint64_t>(n);
  }
}

}  // namespace dilatron
