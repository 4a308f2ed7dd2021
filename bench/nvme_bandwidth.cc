// O_DIRECT write-then-read bandwidth of the NVMe offload engine (io_uring and the pread/pwrite
// thread pool) over block sizes and queue depths, against `dd ... oflag/iflag=direct` on the
// same file size, in one run. The data read back is checked against what was written.
//
//   bazel run -c opt //bench:nvme_bandwidth -- DIRECTORY [MiB, default 1024]
// DIRECTORY must be on the disk to measure (not tmpfs); a scratch file is created there and
// removed. Thread-pool rows use as many threads as the queue depth.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "core/check.h"
#include "core/rng.h"
#include "zero/nvme_engine.h"

namespace dilatron {
namespace {

constexpr int64_t kMiB = 1 << 20;
constexpr int64_t kChunkBytes = 128 * kMiB;  // one transfer; two are kept in flight

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::shared_ptr<char> aligned_bytes(int64_t bytes) {
  void* p = std::aligned_alloc(kIoAlignment, static_cast<size_t>(bytes));
  DILATRON_CHECK(p != nullptr, "{} bytes", bytes);
  return {static_cast<char*>(p), std::free};
}

void fill_random(char* buf, int64_t bytes, uint64_t seed) {
  auto* words = reinterpret_cast<uint32_t*>(buf);
  for (int64_t i = 0; i < bytes / 4; i += 4) philox_block(philox_key(seed), 3, static_cast<uint64_t>(i / 4), &words[i]);
}

struct Bandwidth {
  double write_gbs;
  double read_gbs;
};

// Chunk k of the file comes from / goes to buffer k % 2, so two transfers overlap.
Bandwidth measure_engine(IoEngine& engine, const std::string& path, int64_t file_bytes,
                         const std::shared_ptr<char> (&sources)[2], const std::shared_ptr<char> (&sinks)[2]) {
  int fd = DILATRON_CHECK_SYSCALL(::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_DIRECT, 0600), "open {}", path);
  const int64_t chunks = file_bytes / kChunkBytes;
  auto run = [&](bool write) {
    auto start = std::chrono::steady_clock::now();
    IoTicket in_flight[2];
    for (int64_t k = 0; k < chunks; ++k) {
      IoTicket& slot = in_flight[k % 2];
      slot.wait();
      slot = write ? engine.write(fd, path, sources[k % 2].get(), kChunkBytes, k * kChunkBytes)
                   : engine.read(fd, path, sinks[k % 2].get(), kChunkBytes, k * kChunkBytes);
    }
    for (IoTicket& t : in_flight) t.wait();
    return static_cast<double>(file_bytes) / seconds_since(start) / 1e9;
  };
  Bandwidth result{run(true), 0.0};
  for (auto& sink : sinks) std::memset(sink.get(), 0xFF, kChunkBytes);
  result.read_gbs = run(false);
  ::close(fd);
  for (int i = 0; i < 2 && i < chunks; ++i)
    DILATRON_CHECK(std::memcmp(sources[i].get(), sinks[i].get(), kChunkBytes) == 0,
                   "{}: data read back differs from what was written", engine.name());
  return result;
}

// dd's last stderr line: "N bytes (...) copied, S s, R GB/s"; the rate is recomputed from N / S.
double run_dd(const std::string& command) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  DILATRON_CHECK(pipe != nullptr, "popen {}: {}", command, std::strerror(errno));
  char line[512];
  std::string last;
  while (std::fgets(line, sizeof line, pipe)) last = line;
  int status = ::pclose(pipe);
  DILATRON_CHECK(status == 0, "{} exited with status {}: {}", command, status, last);
  long long bytes = 0;
  double secs = 0;
  const char* copied = std::strstr(last.c_str(), "copied, ");
  DILATRON_CHECK(std::sscanf(last.c_str(), "%lld bytes", &bytes) == 1 && copied != nullptr &&
                     std::sscanf(copied, "copied, %lf s", &secs) == 1 && secs > 0,
                 "cannot parse dd's output: {}", last);
  return static_cast<double>(bytes) / secs / 1e9;
}

int run(int argc, char** argv) {
  DILATRON_CHECK_INPUT(argc == 2 || argc == 3, "usage: nvme_bandwidth DIRECTORY [MiB, default 1024]");
  const std::string path = std::string(argv[1]) + "/nvme_bandwidth.scratch";
  const int64_t mib = argc == 3 ? std::stoll(argv[2]) : 1024;
  DILATRON_CHECK_INPUT(mib > 0 && mib * kMiB % kChunkBytes == 0, "the size must be a multiple of {} MiB",
                       kChunkBytes / kMiB);
  const int64_t file_bytes = mib * kMiB;

  std::shared_ptr<char> sources[2] = {aligned_bytes(kChunkBytes), aligned_bytes(kChunkBytes)};
  std::shared_ptr<char> sinks[2] = {aligned_bytes(kChunkBytes), aligned_bytes(kChunkBytes)};
  fill_random(sources[0].get(), kChunkBytes, 1);
  fill_random(sources[1].get(), kChunkBytes, 2);

  fmt::print("O_DIRECT bandwidth, {} MiB file at {}, GB/s (1e9 bytes/s)\n", mib, path);
  fmt::print("{:<12} {:>10} {:>6} {:>8} {:>8}\n", "engine", "block", "depth", "write", "read");
  for (bool uring : {true, false}) {
    for (int depth : {8, 32}) {
      for (int64_t block : {256 * 1024L, kMiB, 4 * kMiB}) {
        IoEngineConfig config;
        config.block_bytes = block;
        config.queue_depth = depth;
        config.threads = depth;
        config.allow_thread_pool = !uring;  // an io_uring row must really be io_uring
        auto engine = uring ? make_io_engine(config) : make_thread_pool_engine(config);
        Bandwidth bw = measure_engine(*engine, path, file_bytes, sources, sinks);
        fmt::print("{:<12} {:>7} KiB {:>6} {:>8.2f} {:>8.2f}\n", engine->name(), block / 1024, depth, bw.write_gbs,
                   bw.read_gbs);
        std::fflush(stdout);
      }
    }
  }
  double dd_write = run_dd(fmt::format("dd if=/dev/zero of={} bs=1M count={} oflag=direct", path, mib));
  double dd_read = run_dd(fmt::format("dd if={} of=/dev/null bs=1M iflag=direct", path));
  fmt::print("{:<12} {:>7} KiB {:>6} {:>8.2f} {:>8.2f}\n", "dd", 1024, 1, dd_write, dd_read);
  ::unlink(path.c_str());
  return 0;
}

}  // namespace
}  // namespace dilatron

int main(int argc, char** argv) {
  try {
    return dilatron::run(argc, argv);
  } catch (const dilatron::InputError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
