#include "zero/nvme_engine.h"

#include <liburing.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/check.h"

namespace dilatron {
namespace {

enum class Direction { read, write };

const char* direction_name(Direction d) { return d == Direction::read ? "read" : "write"; }

void check_config(const IoEngineConfig& config) {
  DILATRON_CHECK_INPUT(config.block_bytes > 0 && config.block_bytes % kIoAlignment == 0,
                       "I/O block size must be a positive multiple of {} bytes, got {}", kIoAlignment,
                       config.block_bytes);
  DILATRON_CHECK_INPUT(config.queue_depth >= 1, "I/O queue depth must be at least 1, got {}",
                       config.queue_depth);
  DILATRON_CHECK_INPUT(config.threads >= 1, "I/O threads must be at least 1, got {}", config.threads);
}

// One read() or write() call: its blocks, how far they got, and the first failure.
struct Transfer {
  Direction direction;
  int fd;
  std::string path;
  char* buf;
  int64_t bytes;
  int64_t offset;
  int64_t handed_out = 0;  // bytes of [0, bytes) already given to a request
  int in_flight = 0;       // requests not yet completed
  std::string error;       // first failure; later blocks are not started

  bool complete() const { return in_flight == 0 && (handed_out == bytes || !error.empty()); }

  // A failed request at byte `at` of the transfer; `cause` is strerror's text or an EOF note.
  void fail(int64_t at, const std::string& cause) {
    if (!error.empty()) return;
    error = fmt::format("{} of {} bytes at offset {} of {} failed at byte {}: {}", direction_name(direction),
                        bytes, offset, path, offset + at, cause);
  }
};

std::shared_ptr<Transfer> make_transfer(Direction direction, int fd, const std::string& path, const void* buf,
                                        int64_t bytes, int64_t offset) {
  DILATRON_CHECK(reinterpret_cast<uintptr_t>(buf) % kIoAlignment == 0 && bytes % kIoAlignment == 0 &&
                     offset % kIoAlignment == 0 && bytes >= 0 && offset >= 0,
                 "O_DIRECT {} of {}: buffer address, size and offset must be multiples of {} "
                 "(use allocate_io_buffer); got buffer {}, {} bytes at offset {}",
                 direction_name(direction), path, kIoAlignment, buf, bytes, offset);
  auto t = std::make_shared<Transfer>();
  t->direction = direction;
  t->fd = fd;
  t->path = path;
  t->buf = static_cast<char*>(const_cast<void*>(buf));
  t->bytes = bytes;
  t->offset = offset;
  return t;
}

const char* kEndOfFile = "end of file (the file is shorter than the range read)";

// ---------------------------------------------------------------------------------------------
// io_uring: one ring per engine, shared with the engine's tickets so that they may outlive it.

// A request in flight; its address is the SQE's user_data.
struct UringRequest {
  std::shared_ptr<Transfer> transfer;
  int64_t start;   // byte within the transfer
  int64_t length;  // bytes still to move
};

class UringRing {
 public:
  explicit UringRing(const IoEngineConfig& config) : config_(config) {
    int ret = io_uring_queue_init(static_cast<unsigned>(config.queue_depth), &ring_, 0);
    if (ret < 0) throw Error(fmt::format("io_uring_queue_init: {}", std::strerror(-ret)));
  }
  ~UringRing() {
    // Requests still in flight write into caller buffers and hold UringRequest objects: drain
    // them before the ring goes (only reachable when no ticket is left, so errors have no owner).
    while (in_flight_ > 0) {
      io_uring_cqe* cqe = nullptr;
      int ret = io_uring_wait_cqe(&ring_, &cqe);
      if (ret == -EINTR) continue;
      if (ret < 0) break;
      delete static_cast<UringRequest*>(io_uring_cqe_get_data(cqe));
      io_uring_cqe_seen(&ring_, cqe);
      --in_flight_;
    }
    io_uring_queue_exit(&ring_);
  }
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  void start(std::shared_ptr<Transfer> t) {
    if (t->bytes > 0) waiting_.push_back(std::move(t));
    reap(/*block=*/false);
  }

  void wait_for(const Transfer& t) {
    while (!t.complete()) reap(/*block=*/true);
    if (!t.error.empty()) throw Error(t.error);
  }

 private:
  // Fills the queue from waiting transfers, then handles completions; with `block`, waits for
  // at least one.
  void reap(bool block) {
    submit_waiting();
    io_uring_cqe* cqe = nullptr;
    if (block) {
      DILATRON_CHECK(in_flight_ > 0, "io_uring: waiting on a transfer with nothing in flight");
      int ret;
      do ret = io_uring_wait_cqe(&ring_, &cqe);
      while (ret == -EINTR);
      if (ret < 0) throw Error(fmt::format("io_uring_wait_cqe: {}", std::strerror(-ret)));
      complete(cqe);
    }
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) complete(cqe);
    submit_waiting();
  }

  void complete(io_uring_cqe* cqe) {
    auto* request = static_cast<UringRequest*>(io_uring_cqe_get_data(cqe));
    int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    --in_flight_;
    Transfer& t = *request->transfer;
    if (res == -EINTR || res == -EAGAIN) {
      resubmit(request);
      return;
    }
    if (res > 0 && res < request->length) {
      // A short transfer: move on to the remainder (a read at EOF then returns 0 and fails).
      request->start += res;
      request->length -= res;
      resubmit(request);
      return;
    }
    if (res < 0) t.fail(request->start, std::strerror(-res));
    if (res == 0) t.fail(request->start, t.direction == Direction::read ? kEndOfFile : "the device accepted no bytes");
    --t.in_flight;
    delete request;
  }

  void resubmit(UringRequest* request) {
    if (!request->transfer->error.empty()) {
      --request->transfer->in_flight;
      delete request;
      return;
    }
    prepare(request);
    submit();
  }

  void prepare(UringRequest* request) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    DILATRON_CHECK(sqe != nullptr, "io_uring: submission queue full with {} requests in flight", in_flight_);
    Transfer& t = *request->transfer;
    char* at = t.buf + request->start;
    auto length = static_cast<unsigned>(request->length);
    if (t.direction == Direction::read)
      io_uring_prep_read(sqe, t.fd, at, length, static_cast<uint64_t>(t.offset + request->start));
    else
      io_uring_prep_write(sqe, t.fd, at, length, static_cast<uint64_t>(t.offset + request->start));
    io_uring_sqe_set_data(sqe, request);
    ++in_flight_;
  }

  void submit() {
    int ret;
    do ret = io_uring_submit(&ring_);
    while (ret == -EINTR);
    if (ret < 0) throw Error(fmt::format("io_uring_submit: {}", std::strerror(-ret)));
  }

  void submit_waiting() {
    bool prepared = false;
    while (in_flight_ < config_.queue_depth && !waiting_.empty()) {
      const std::shared_ptr<Transfer>& t = waiting_.front();
      if (!t->error.empty() || t->handed_out == t->bytes) {
        waiting_.pop_front();
        continue;
      }
      int64_t length = std::min(config_.block_bytes, t->bytes - t->handed_out);
      prepare(new UringRequest{t, t->handed_out, length});
      t->handed_out += length;
      ++t->in_flight;
      prepared = true;
    }
    if (prepared) submit();
  }

  const IoEngineConfig config_;
  io_uring ring_{};
  int in_flight_ = 0;
  std::deque<std::shared_ptr<Transfer>> waiting_;  // transfers with blocks not yet submitted
};

class UringPending final : public IoTicket::Pending {
 public:
  UringPending(std::shared_ptr<UringRing> ring, std::shared_ptr<Transfer> transfer)
      : ring_(std::move(ring)), transfer_(std::move(transfer)) {}
  void wait() override { ring_->wait_for(*transfer_); }

 private:
  std::shared_ptr<UringRing> ring_;
  std::shared_ptr<Transfer> transfer_;
};

class UringEngine final : public IoEngine {
 public:
  explicit UringEngine(const IoEngineConfig& config) : ring_(std::make_shared<UringRing>(config)) {}
  const char* name() const override { return "io_uring"; }
  IoTicket read(int fd, const std::string& path, void* buf, int64_t bytes, int64_t offset) override {
    return start(make_transfer(Direction::read, fd, path, buf, bytes, offset));
  }
  IoTicket write(int fd, const std::string& path, const void* buf, int64_t bytes, int64_t offset) override {
    return start(make_transfer(Direction::write, fd, path, buf, bytes, offset));
  }

 private:
  IoTicket start(std::shared_ptr<Transfer> t) {
    ring_->start(t);
    return IoTicket(std::make_unique<UringPending>(ring_, std::move(t)));
  }
  std::shared_ptr<UringRing> ring_;
};

// ---------------------------------------------------------------------------------------------
// Thread pool: workers take blocks from one queue and loop pread/pwrite over each.

struct PoolTransfer {
  Transfer transfer;
  std::mutex mutex;
  std::condition_variable done;
};

struct PoolBlock {
  std::shared_ptr<PoolTransfer> owner;
  int64_t start;
  int64_t length;
};

// Moves one block, retrying short transfers and EINTR; returns "" or the failure's cause and the
// byte where it happened.
std::string move_block(const Transfer& t, int64_t start, int64_t length, int64_t* failed_at) {
  int64_t done = 0;
  while (done < length) {
    char* at = t.buf + start + done;
    off_t where = t.offset + start + done;
    auto n = static_cast<size_t>(length - done);
    ssize_t ret = t.direction == Direction::read ? ::pread(t.fd, at, n, where) : ::pwrite(t.fd, at, n, where);
    if (ret < 0 && errno == EINTR) continue;
    *failed_at = start + done;
    if (ret < 0) return std::strerror(errno);
    if (ret == 0) return t.direction == Direction::read ? kEndOfFile : "the device accepted no bytes";
    done += ret;
  }
  return {};
}

class ThreadPoolEngine final : public IoEngine {
 public:
  explicit ThreadPoolEngine(const IoEngineConfig& config) : config_(config) {
    int workers = std::min(config.threads, config.queue_depth);
    for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { work(); });
  }
  ~ThreadPoolEngine() override {
    // Workers finish every queued block first, so outstanding tickets still complete.
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& w : workers_) w.join();
  }
  const char* name() const override { return "thread_pool"; }
  IoTicket read(int fd, const std::string& path, void* buf, int64_t bytes, int64_t offset) override {
    return start(make_transfer(Direction::read, fd, path, buf, bytes, offset));
  }
  IoTicket write(int fd, const std::string& path, const void* buf, int64_t bytes, int64_t offset) override {
    return start(make_transfer(Direction::write, fd, path, buf, bytes, offset));
  }

 private:
  class Pending final : public IoTicket::Pending {
   public:
    explicit Pending(std::shared_ptr<PoolTransfer> t) : t_(std::move(t)) {}
    void wait() override {
      std::unique_lock lock(t_->mutex);
      t_->done.wait(lock, [&] { return t_->transfer.complete(); });
      if (!t_->transfer.error.empty()) throw Error(t_->transfer.error);
    }

   private:
    std::shared_ptr<PoolTransfer> t_;
  };

  IoTicket start(std::shared_ptr<Transfer> transfer) {
    auto owner = std::make_shared<PoolTransfer>();
    owner->transfer = std::move(*transfer);
    Transfer& t = owner->transfer;
    // Every block counts as in flight until a worker has dealt with it; set before any worker
    // can see the transfer.
    t.in_flight = static_cast<int>((t.bytes + config_.block_bytes - 1) / config_.block_bytes);
    t.handed_out = t.bytes;
    {
      std::lock_guard lock(mutex_);
      for (int64_t start = 0; start < t.bytes; start += config_.block_bytes)
        queue_.push_back(PoolBlock{owner, start, std::min(config_.block_bytes, t.bytes - start)});
    }
    ready_.notify_all();
    return IoTicket(std::make_unique<Pending>(std::move(owner)));
  }

  void work() {
    for (;;) {
      PoolBlock block;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        block = std::move(queue_.front());
        queue_.pop_front();
      }
      PoolTransfer& owner = *block.owner;
      bool failed_before;
      {
        std::lock_guard lock(owner.mutex);
        failed_before = !owner.transfer.error.empty();
      }
      int64_t failed_at = 0;
      std::string cause = failed_before ? std::string() : move_block(owner.transfer, block.start, block.length, &failed_at);
      {
        std::lock_guard lock(owner.mutex);
        if (!cause.empty()) owner.transfer.fail(failed_at, cause);
        --owner.transfer.in_flight;
      }
      owner.done.notify_all();
    }
  }

  const IoEngineConfig config_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<PoolBlock> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

void warn_fallback_once(const std::string& reason) {
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    spdlog::warn("io_uring is unavailable ({}); NVMe offload uses a pool of pread/pwrite threads", reason);
}

}  // namespace

std::unique_ptr<IoEngine> make_thread_pool_engine(const IoEngineConfig& config) {
  check_config(config);
  return std::make_unique<ThreadPoolEngine>(config);
}

std::unique_ptr<IoEngine> make_io_engine(const IoEngineConfig& config) {
  check_config(config);
  std::string reason = config.force_thread_pool_reason;
  if (reason.empty()) {
    try {
      return std::make_unique<UringEngine>(config);
    } catch (const Error& e) {
      reason = e.what();
    }
  }
  if (!config.allow_thread_pool)
    throw Error(fmt::format("io_uring is unavailable ({}) and the thread-pool fallback is disabled "
                            "(allow_thread_pool: false)",
                            reason));
  warn_fallback_once(reason);
  return make_thread_pool_engine(config);
}

}  // namespace dilatron
