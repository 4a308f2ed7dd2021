// Crash-safe file primitives for checkpoints: files written whole and fsynced, directories
// fsynced after their entries change, atomic replacement by rename, and the XXH3-64 digest
// (xxHash's 64-bit hash) of a file. Every system call is checked; failures throw Error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dilatron {

struct FileDigest {
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
};

// "0123456789abcdef": how digests appear in JSON.
std::string hex64(uint64_t value);

void fsync_dir(const std::string& path);
// mkdir that accepts an existing directory.
void make_dir(const std::string& path);
// Removes a file or directory tree; nothing there is fine.
void remove_tree(const std::string& path);
// Entry names other than "." and ".."; an absent directory has none.
std::vector<std::string> list_dir(const std::string& path);
bool path_exists(const std::string& path);

// Creates `path` (which must not exist), writes the pieces in order, fsyncs and closes it;
// returns the size and digest of what was written.
FileDigest write_new_file_synced(const std::string& path, const std::vector<std::string_view>& pieces);

// Replaces `path` by a file holding the pieces, atomically: written to `path`.tmp (a stale one
// is removed first), fsynced, renamed over `path`, then the directory is fsynced. A crash
// leaves the old or the new file, never a mix.
void replace_file_atomically(const std::string& path, const std::vector<std::string_view>& pieces);

// Size and digest of a file's contents; nullopt if it does not exist.
std::optional<FileDigest> digest_file(const std::string& path);

// The whole file; nullopt if it does not exist.
std::optional<std::string> read_whole_file(const std::string& path);

// Reads exactly `bytes` at `offset`; a short read (the file shrank) throws InputError naming it.
void pread_exact(int fd, void* dst, uint64_t bytes, uint64_t offset, const std::string& path);

// An owned file descriptor (closed on destruction).
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  // Closing can report a deferred write error, so writers call this and have it checked.
  void close(const std::string& path);

 private:
  int fd_;
};

// A descriptor open for reading, or -1 if the file does not exist.
int open_for_reading(const std::string& path);

}  // namespace dilatron
