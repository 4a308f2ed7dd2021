// Both I/O engines against real O_DIRECT files in TEST_TMPDIR (a disk, not tmpfs, under Bazel):
// random data round trips with several transfers in flight waited out of order, and the error
// paths (EOF, EBADF, ENOSPC from /dev/full, misalignment).
#include "zero/nvme_engine.h"

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "core/check.h"
#include "core/rng.h"

namespace dilatron {
namespace {

constexpr int64_t kKiB = 1024, kMiB = 1024 * 1024;

std::string test_dir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  REQUIRE_MESSAGE(dir != nullptr, "run under bazel test (TEST_TMPDIR)");
  return dir;
}

// Random bit patterns (any float, NaNs included): a round trip must be bitwise exact.
void fill_random(void* buf, int64_t bytes, uint64_t seed) {
  auto* words = static_cast<uint32_t*>(buf);
  for (int64_t i = 0; i < bytes / 4; i += 4) {
    uint32_t w[4];
    philox_block(philox_key(seed), /*stream=*/7, static_cast<uint64_t>(i / 4), w);
    for (int j = 0; j < 4 && i + j < bytes / 4; ++j) words[i + j] = w[j];
  }
}

void poison(void* buf, int64_t bytes) { std::memset(buf, 0xFF, static_cast<size_t>(bytes)); }  // NaN floats

struct TempFile {
  std::string path;
  int fd;
  TempFile(const std::string& name, int flags) : path(test_dir() + "/" + name) {
    fd = ::open(path.c_str(), flags | O_CREAT, 0600);
    REQUIRE_MESSAGE(fd >= 0, "open ", path, ": ", std::strerror(errno), " (O_DIRECT needs a disk filesystem)");
  }
  ~TempFile() {
    ::close(fd);
    ::unlink(path.c_str());
  }
};

std::shared_ptr<char> aligned_bytes(int64_t bytes) {
  return {static_cast<char*>(std::aligned_alloc(kIoAlignment, static_cast<size_t>(bytes))), std::free};
}

bool io_uring_works_here() {
  io_uring ring;
  if (io_uring_queue_init(4, &ring, 0) < 0) return false;
  io_uring_queue_exit(&ring);
  return true;
}

// Small blocks and a shallow queue, so every transfer takes several rounds of the queue.
IoEngineConfig small_config() {
  IoEngineConfig config;
  config.block_bytes = 64 * kKiB;
  config.queue_depth = 4;
  config.threads = 3;
  return config;
}

std::vector<std::unique_ptr<IoEngine>> both_engines(const IoEngineConfig& config) {
  std::vector<std::unique_ptr<IoEngine>> engines;
  engines.push_back(make_io_engine(config));
  engines.push_back(make_thread_pool_engine(config));
  return engines;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_CASE("make_io_engine uses io_uring where io_uring_queue_init works") {
  auto engine = make_io_engine({});
  if (io_uring_works_here()) {
    CHECK(std::string(engine->name()) == "io_uring");
  } else {
    MESSAGE("io_uring is unavailable on this machine: only the thread pool is exercised");
    CHECK(std::string(engine->name()) == "thread_pool");
  }
  CHECK(std::string(make_thread_pool_engine({})->name()) == "thread_pool");
}

TEST_CASE("both engines: random data round trips bitwise, several transfers in flight, waited out of order") {
  for (auto& engine : both_engines(small_config())) {
    CAPTURE(engine->name());
    TempFile file(std::string("roundtrip_") + engine->name(), O_RDWR | O_DIRECT | O_TRUNC);
    // (offset, bytes): one block, a partial last block, many queue rounds, a lone 4 KiB.
    const std::vector<std::pair<int64_t, int64_t>> ranges = {
        {0, 64 * kKiB}, {64 * kKiB, 100 * kKiB + 4 * kKiB}, {1 * kMiB, 3 * kMiB}, {5 * kMiB, 4 * kKiB}};
    std::vector<std::shared_ptr<char>> sources, readback;
    std::vector<IoTicket> tickets;
    for (size_t i = 0; i < ranges.size(); ++i) {
      sources.push_back(aligned_bytes(ranges[i].second));
      fill_random(sources.back().get(), ranges[i].second, 100 + i);
      tickets.push_back(engine->write(file.fd, file.path, sources.back().get(), ranges[i].second, ranges[i].first));
    }
    for (size_t i = tickets.size(); i-- > 0;) tickets[i].wait();
    tickets.clear();
    for (size_t i = 0; i < ranges.size(); ++i) {
      readback.push_back(aligned_bytes(ranges[i].second));
      poison(readback.back().get(), ranges[i].second);
      tickets.push_back(engine->read(file.fd, file.path, readback.back().get(), ranges[i].second, ranges[i].first));
    }
    for (size_t i : {2, 0, 3, 1}) tickets[i].wait();
    for (size_t i = 0; i < ranges.size(); ++i) {
      CAPTURE(i);
      CHECK(std::memcmp(sources[i].get(), readback[i].get(), static_cast<size_t>(ranges[i].second)) == 0);
    }
  }
}

TEST_CASE("both engines: a read past end of file fails on wait, naming the file, every time") {
  for (auto& engine : both_engines(small_config())) {
    CAPTURE(engine->name());
    TempFile file(std::string("short_") + engine->name(), O_RDWR | O_DIRECT | O_TRUNC);
    REQUIRE(::ftruncate(file.fd, 200 * kKiB) == 0);
    auto buf = aligned_bytes(1 * kMiB);
    IoTicket spanning = engine->read(file.fd, file.path, buf.get(), 1 * kMiB, 0);
    std::string message = error_of([&] { spanning.wait(); });
    CHECK(message.find(file.path) != std::string::npos);
    CHECK(message.find("end of file") != std::string::npos);
    // The piece is never handed out: waiting again throws again.
    CHECK_THROWS_AS(spanning.wait(), Error);
    IoTicket beyond = engine->read(file.fd, file.path, buf.get(), 4 * kKiB, 1 * kMiB);
    CHECK(error_of([&] { beyond.wait(); }).find("end of file") != std::string::npos);
  }
}

TEST_CASE("both engines: a write to a read-only fd fails with the path and the cause") {
  for (auto& engine : both_engines(small_config())) {
    CAPTURE(engine->name());
    TempFile file(std::string("readonly_") + engine->name(), O_RDONLY | O_DIRECT);
    auto buf = aligned_bytes(256 * kKiB);
    fill_random(buf.get(), 256 * kKiB, 5);
    IoTicket ticket = engine->write(file.fd, file.path, buf.get(), 256 * kKiB, 0);
    std::string message = error_of([&] { ticket.wait(); });
    CHECK(message.find(file.path) != std::string::npos);
    CHECK(message.find(std::strerror(EBADF)) != std::string::npos);
  }
}

TEST_CASE("both engines: ENOSPC (a write to /dev/full) is reported clearly") {
  for (auto& engine : both_engines(small_config())) {
    CAPTURE(engine->name());
    int fd = ::open("/dev/full", O_WRONLY);
    REQUIRE(fd >= 0);
    auto buf = aligned_bytes(128 * kKiB);
    fill_random(buf.get(), 128 * kKiB, 6);
    IoTicket ticket = engine->write(fd, "/dev/full", buf.get(), 128 * kKiB, 0);
    std::string message = error_of([&] { ticket.wait(); });
    ::close(fd);
    CHECK(message.find("/dev/full") != std::string::npos);
    CHECK(message.find(std::strerror(ENOSPC)) != std::string::npos);
  }
}

TEST_CASE("both engines: misaligned buffers, sizes and offsets are rejected before any I/O") {
  for (auto& engine : both_engines(small_config())) {
    CAPTURE(engine->name());
    TempFile file(std::string("aligned_") + engine->name(), O_RDWR | O_DIRECT | O_TRUNC);
    auto buf = aligned_bytes(16 * kKiB);
    CHECK(error_of([&] { engine->read(file.fd, file.path, buf.get() + 512, 4 * kKiB, 0); }).find("allocate_io_buffer") !=
          std::string::npos);
    CHECK_THROWS_AS(engine->write(file.fd, file.path, buf.get(), 4 * kKiB + 4, 0), Error);
    CHECK_THROWS_AS(engine->write(file.fd, file.path, buf.get(), 4 * kKiB, 512), Error);
  }
}

TEST_CASE("the fallback to the thread pool is taken and logged once; disallowed, it is an error") {
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_st>(log)));
  IoEngineConfig config = small_config();
  config.force_thread_pool_reason = "simulated io_uring_setup: Operation not permitted";
  for (int i = 0; i < 3; ++i) CHECK(std::string(make_io_engine(config)->name()) == "thread_pool");
  spdlog::set_default_logger(previous);

  std::string text = log.str();
  int warnings = 0;
  for (size_t at = text.find("io_uring is unavailable"); at != std::string::npos;
       at = text.find("io_uring is unavailable", at + 1))
    ++warnings;
  // On a machine without io_uring an earlier test case has already logged the real reason.
  if (io_uring_works_here()) {
    CHECK(warnings == 1);
    CHECK(text.find(config.force_thread_pool_reason) != std::string::npos);
  } else {
    CHECK(warnings <= 1);
  }

  config.allow_thread_pool = false;
  std::string message = error_of([&] { make_io_engine(config); });
  CHECK(message.find("io_uring is unavailable") != std::string::npos);
  CHECK(message.find(config.force_thread_pool_reason) != std::string::npos);
}

TEST_CASE("bad engine configurations are input errors") {
  IoEngineConfig config;
  config.block_bytes = 1000;
  CHECK_THROWS_AS(make_io_engine(config), InputError);
  config = {};
  config.queue_depth = 0;
  CHECK_THROWS_AS(make_thread_pool_engine(config), InputError);
}

}  // namespace
}  // namespace dilatron
