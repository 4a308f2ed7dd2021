// The nvme tier: one swap file per store in NvmeOptions::directory, opened with O_DIRECT, each
// piece at a 4096-byte-aligned offset and padded to a multiple of 4096 bytes. Reads and writes go
// through an IoEngine (io_uring, or the thread pool) straight from/into the caller's buffer,
// which must come from allocate_io_buffer(piece_elements(piece)): 4096-byte aligned (checked)
// and at least the padded piece long (the padding is transferred too; a pointer's size cannot
// be checked).
//
// Files: the swap file is named shard_store_<n>.swap, n counting the stores this process has
// created, and is opened with O_TRUNC. It (and the directories the store created) is removed by
// the destructor, also when construction throws. After a crash the files stay behind; the next
// run with the same directory truncates and reuses them. One directory per rank: two processes
// sharing one would clobber each other's files.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "zero/nvme_engine.h"
#include "zero/shard_store.h"

namespace dilatron {

// The swap file and the directories created for it; removes them when destroyed.
class NvmeSwapFile {
 public:
  NvmeSwapFile(const std::string& directory, int64_t bytes);
  ~NvmeSwapFile();
  NvmeSwapFile(const NvmeSwapFile&) = delete;
  NvmeSwapFile& operator=(const NvmeSwapFile&) = delete;
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  void remove() noexcept;

  std::vector<std::string> created_directories_;  // outermost first
  std::string path_;
  int fd_ = -1;
};

class NvmeShardStore final : public ShardStore {
 public:
  NvmeShardStore(std::vector<int64_t> piece_elements, const NvmeOptions& options);

  StorageTier tier() const override { return StorageTier::nvme; }
  int pieces() const override { return static_cast<int>(elements_.size()); }
  int64_t piece_elements(int piece) const override;
  float* resident(int) override { return nullptr; }
  IoTicket read_async(int piece, float* dst) override;
  IoTicket write_async(int piece, const float* src) override;
  int64_t memory_bytes() const override { return 0; }
  int64_t disk_bytes() const override { return file_bytes_; }
  const std::string& swap_path() const { return file_->path(); }
  const char* engine_name() const { return engine_->name(); }

 private:
  void check_piece(int piece, const void* buf, const char* what) const;

  std::vector<int64_t> elements_;
  std::vector<int64_t> offsets_;  // bytes, multiples of kIoAlignment
  std::vector<int64_t> padded_bytes_;
  int64_t file_bytes_ = 0;
  std::unique_ptr<NvmeSwapFile> file_;
  // Declared after the file: destroyed first, so its in-flight requests end before the close.
  std::unique_ptr<IoEngine> engine_;
};

}  // namespace dilatron
