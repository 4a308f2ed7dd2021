// Where a rank's shards of one kind of state live between uses: in the process's working
// memory ("device"), in a separate host buffer ("cpu"; pinned when CUDA is present), or in a
// swap file on NVMe ("nvme"). The ZeRO engine streams pieces through caller buffers with
// asynchronous reads and writes, so every tier runs the same arithmetic and gives
// bitwise-identical results.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dilatron {

enum class StorageTier { device, cpu, nvme };

const char* storage_tier_name(StorageTier tier);

// A pending read or write. wait() returns once the buffer may be used; it throws an Error
// naming the file and the cause on a failed or short transfer, and a piece whose read failed
// is never handed out as if it had succeeded. The destructor waits.
class IoTicket {
 public:
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  IoTicket() = default;  // already complete
  explicit IoTicket(std::unique_ptr<Pending> pending) : pending_(std::move(pending)) {}
  IoTicket(IoTicket&&) noexcept = default;
  IoTicket& operator=(IoTicket&& other) noexcept;
  ~IoTicket();
  void wait();

 private:
  std::unique_ptr<Pending> pending_;
};

struct NvmeOptions {
  std::string directory;      // this rank's swap directory (created; removed with the store)
  int64_t block_bytes = 1 << 20;  // I/O request size
  int queue_depth = 8;
  bool allow_thread_pool = true;  // use the pread/pwrite pool when io_uring is unavailable (logged once)
};

// `piece_elements[i]` fp32 elements in piece i; pieces are read and written whole.
class ShardStore {
 public:
  virtual ~ShardStore() = default;
  virtual StorageTier tier() const = 0;
  virtual int pieces() const = 0;
  virtual int64_t piece_elements(int piece) const = 0;

  // Memory tiers: the piece itself, usable in place. nvme: nullptr.
  virtual float* resident(int piece) = 0;
  // Copies the piece into dst / from src. Buffers handed to nvme must come from
  // allocate_io_buffer (aligned for O_DIRECT) and stay alive until the ticket completes.
  virtual IoTicket read_async(int piece, float* dst) = 0;
  virtual IoTicket write_async(int piece, const float* src) = 0;

  // Bytes this store holds in memory (0 for nvme beyond its buffers) and on disk.
  virtual int64_t memory_bytes() const = 0;
  virtual int64_t disk_bytes() const = 0;
};

std::unique_ptr<ShardStore> make_shard_store(StorageTier tier, std::vector<int64_t> piece_elements,
                                             const NvmeOptions& nvme = {});

// Whether host buffers are pinned (page-locked): in a CUDA build with a GPU visible. The cpu tier
// and the I/O buffers are then pinned, so their copies to and from the GPU run asynchronously.
bool pin_host_buffers();

// Aligned host memory for I/O buffers (4096-byte alignment, size rounded up to 4096 bytes),
// pinned when pin_host_buffers().
std::shared_ptr<float> allocate_io_buffer(int64_t elements);

}  // namespace dilatron
