#include "zero/nvme_shard_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/check.h"

namespace dilatron {
namespace {

std::atomic<int> stores_created{0};

std::vector<std::string> create_directories(const std::string& directory) {
  std::vector<std::string> missing;  // innermost first
  std::error_code ignored;  // an unreadable ancestor counts as missing; mkdir then says why
  for (std::filesystem::path p = directory; !p.empty() && !std::filesystem::exists(p, ignored); p = p.parent_path()) {
    missing.push_back(p.string());
    if (p == p.parent_path()) break;
  }
  std::vector<std::string> created;
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0700) != 0 && errno != EEXIST) {
      int err = errno;
      for (auto c = created.rbegin(); c != created.rend(); ++c) ::rmdir(c->c_str());
      throw InputError(fmt::format("zero.nvme_path {}: cannot create directory {}: {}", directory, *it,
                                   std::strerror(err)));
    }
    created.push_back(*it);
  }
  return created;
}

}  // namespace

NvmeSwapFile::NvmeSwapFile(const std::string& directory, int64_t bytes) {
  DILATRON_CHECK_INPUT(!directory.empty(), "zero.nvme_path is empty: the nvme tier needs a swap directory");
  created_directories_ = create_directories(directory);
  path_ = (std::filesystem::path(directory) / fmt::format("shard_store_{}.swap", stores_created++)).string();
  try {
    fd_ = ::open(path_.c_str(), O_DIRECT | O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0 && errno == EINVAL)
      throw InputError(fmt::format("zero.nvme_path {}: the filesystem refuses O_DIRECT for {} ({}); put the "
                                   "swap directory on a local disk (tmpfs cannot do direct I/O)",
                                   directory, path_, std::strerror(errno)));
    if (fd_ < 0)
      throw InputError(fmt::format("zero.nvme_path {}: cannot open swap file {}: {}", directory, path_,
                                   std::strerror(errno)));
    if (bytes > 0 && ::fallocate(fd_, 0, 0, bytes) != 0) {
      int err = errno;
      // Filesystems without fallocate get a sparse file; space then runs out at write time.
      if (err != EOPNOTSUPP || ::ftruncate(fd_, bytes) != 0) {
        if (err == EOPNOTSUPP) err = errno;
        throw InputError(fmt::format("zero.nvme_path {}: cannot reserve {} bytes for swap file {}: {}", directory,
                                     bytes, path_, std::strerror(err)));
      }
    }
  } catch (...) {
    remove();
    throw;
  }
}

NvmeSwapFile::~NvmeSwapFile() { remove(); }

void NvmeSwapFile::remove() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
  // Innermost first; a directory somebody else put files in stays (rmdir fails on non-empty).
  for (auto it = created_directories_.rbegin(); it != created_directories_.rend(); ++it) ::rmdir(it->c_str());
  created_directories_.clear();
}

NvmeShardStore::NvmeShardStore(std::vector<int64_t> piece_elements, const NvmeOptions& options)
    : elements_(std::move(piece_elements)) {
  for (int64_t n : elements_) {
    int64_t padded = (n * static_cast<int64_t>(sizeof(float)) + kIoAlignment - 1) / kIoAlignment * kIoAlignment;
    offsets_.push_back(file_bytes_);
    padded_bytes_.push_back(padded);
    file_bytes_ += padded;
  }
  IoEngineConfig config;
  config.block_bytes = options.block_bytes;
  config.queue_depth = options.queue_depth;
  config.allow_thread_pool = options.allow_thread_pool;
  // The engine first: a bad block size or a missing io_uring fails before any file is made.
  engine_ = make_io_engine(config);
  file_ = std::make_unique<NvmeSwapFile>(options.directory, file_bytes_);
}

int64_t NvmeShardStore::piece_elements(int piece) const {
  DILATRON_CHECK(piece >= 0 && piece < pieces(), "piece {} of {}", piece, pieces());
  return elements_[piece];
}

void NvmeShardStore::check_piece(int piece, const void* buf, const char* what) const {
  DILATRON_CHECK(piece >= 0 && piece < pieces(), "piece {} of {}", piece, pieces());
  DILATRON_CHECK(reinterpret_cast<uintptr_t>(buf) % kIoAlignment == 0 && (buf != nullptr || padded_bytes_[piece] == 0),
                 "nvme {} of piece {}: the buffer {} must come from allocate_io_buffer ({}-byte aligned, "
                 "{} bytes = the piece padded to {} bytes)",
                 what, piece, buf, kIoAlignment, padded_bytes_[piece], kIoAlignment);
}

IoTicket NvmeShardStore::read_async(int piece, float* dst) {
  check_piece(piece, dst, "read");
  return engine_->read(file_->fd(), file_->path(), dst, padded_bytes_[piece], offsets_[piece]);
}

IoTicket NvmeShardStore::write_async(int piece, const float* src) {
  check_piece(piece, src, "write");
  return engine_->write(file_->fd(), file_->path(), src, padded_bytes_[piece], offsets_[piece]);
}

}  // namespace dilatron
