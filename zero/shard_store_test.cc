// Every tier stores and returns pieces bitwise (odd sizes, several transfers in flight waited
// out of order), accounts its bytes, and the nvme tier cleans up its swap file and directory.
#include "zero/shard_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "core/check.h"
#include "core/rng.h"
#include "zero/nvme_shard_store.h"

namespace dilatron {
namespace {

const std::vector<int64_t> kOddPieces = {1, 1023, 1025, (1 << 20) + 7};

std::string test_dir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  REQUIRE_MESSAGE(dir != nullptr, "run under bazel test (TEST_TMPDIR)");
  return dir;
}

NvmeOptions nvme_options(const std::string& name) {
  NvmeOptions options;
  options.directory = test_dir() + "/" + name;
  options.block_bytes = 256 * 1024;  // the 4 MiB piece takes 16 requests, 2 rounds of the queue
  return options;
}

// Random bit patterns over the whole buffer: a round trip must be bitwise exact.
void fill_random(float* buf, int64_t elements, uint64_t seed) {
  auto* words = reinterpret_cast<uint32_t*>(buf);
  for (int64_t i = 0; i < elements; i += 4) {
    uint32_t w[4];
    philox_block(philox_key(seed), /*stream=*/11, static_cast<uint64_t>(i / 4), w);
    for (int64_t j = 0; j < 4 && i + j < elements; ++j) words[i + j] = w[j];
  }
}

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

void check_round_trip(ShardStore& store, uint64_t seed) {
  const int n = store.pieces();
  std::vector<std::shared_ptr<float>> sources, readback;
  std::vector<IoTicket> tickets;
  for (int i = 0; i < n; ++i) {
    sources.push_back(allocate_io_buffer(store.piece_elements(i)));
    fill_random(sources.back().get(), store.piece_elements(i), seed + i);
    tickets.push_back(store.write_async(i, sources.back().get()));
  }
  for (int i = n; i-- > 0;) tickets[i].wait();
  tickets.clear();
  for (int i = 0; i < n; ++i) {
    readback.push_back(allocate_io_buffer(store.piece_elements(i)));
    std::memset(readback.back().get(), 0xFF, store.piece_elements(i) * sizeof(float));  // NaN
    tickets.push_back(store.read_async(i, readback.back().get()));
  }
  // Odd pieces first, then even ones backwards: neither submission order nor its reverse.
  for (int i = 1; i < n; i += 2) tickets[i].wait();
  for (int i = (n - 1) / 2 * 2; i >= 0; i -= 2) tickets[i].wait();
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    size_t bytes = store.piece_elements(i) * sizeof(float);
    CHECK(std::memcmp(sources[i].get(), readback[i].get(), bytes) == 0);
    if (float* resident = store.resident(i)) {
      CHECK(reinterpret_cast<uintptr_t>(resident) % 64 == 0);
      CHECK(std::memcmp(sources[i].get(), resident, bytes) == 0);
    }
  }
}

TEST_CASE("memory tiers: pieces round trip bitwise, resident and 64-byte aligned; bytes accounted") {
  for (StorageTier tier : {StorageTier::device, StorageTier::cpu}) {
    CAPTURE(storage_tier_name(tier));
    auto store = make_shard_store(tier, kOddPieces);
    CHECK(store->tier() == tier);
    REQUIRE(store->pieces() == 4);
    check_round_trip(*store, 1000);
    int64_t expected = 0;
    for (int64_t n : kOddPieces) expected += round_up(n * 4, 64);
    CHECK(store->memory_bytes() == expected);
    CHECK(store->disk_bytes() == 0);
  }
}

TEST_CASE("nvme tier: pieces round trip bitwise through the swap file; bytes accounted; files removed") {
  NvmeOptions options = nvme_options("swap_roundtrip/rank0");
  std::string swap_path;
  {
    auto store = make_shard_store(StorageTier::nvme, kOddPieces, options);
    auto& nvme = dynamic_cast<NvmeShardStore&>(*store);
    swap_path = nvme.swap_path();
    MESSAGE("nvme store engine: ", std::string(nvme.engine_name()));
    CHECK(store->tier() == StorageTier::nvme);
    CHECK(store->resident(0) == nullptr);
    check_round_trip(*store, 2000);
    // A second pass over the same pieces overwrites them in place.
    check_round_trip(*store, 3000);

    int64_t expected = 0;
    for (int64_t n : kOddPieces) expected += round_up(n * 4, 4096);
    CHECK(store->disk_bytes() == expected);
    CHECK(store->memory_bytes() == 0);
    struct stat st {};
    REQUIRE(::stat(swap_path.c_str(), &st) == 0);
    CHECK(st.st_size == expected);
    CHECK(st.st_blocks * 512 >= expected);  // reserved up front, not sparse
  }
  CHECK_FALSE(std::filesystem::exists(swap_path));
  // Both directories the store created are gone.
  CHECK_FALSE(std::filesystem::exists(test_dir() + "/swap_roundtrip"));
}

TEST_CASE("nvme tier: a directory that existed stays; two stores share it with distinct files") {
  NvmeOptions options = nvme_options("swap_shared");
  std::filesystem::create_directories(options.directory);
  {
    auto a = make_shard_store(StorageTier::nvme, {4096}, options);
    auto b = make_shard_store(StorageTier::nvme, {4096}, options);
    CHECK(dynamic_cast<NvmeShardStore&>(*a).swap_path() != dynamic_cast<NvmeShardStore&>(*b).swap_path());
    check_round_trip(*a, 4000);
  }
  CHECK(std::filesystem::exists(options.directory));
  CHECK(std::filesystem::is_empty(options.directory));
}

TEST_CASE("nvme tier: a read of a piece the file no longer holds throws on wait") {
  auto store = make_shard_store(StorageTier::nvme, {1025, 1025}, nvme_options("swap_truncated"));
  auto& nvme = dynamic_cast<NvmeShardStore&>(*store);
  auto buf = allocate_io_buffer(1025);
  store->write_async(1, buf.get()).wait();
  // Another process (or a full disk) cut the file short: piece 1 now lies past the end.
  REQUIRE(::truncate(nvme.swap_path().c_str(), 4096) == 0);
  IoTicket ticket = store->read_async(1, buf.get());
  try {
    ticket.wait();
    FAIL("the read of a truncated piece succeeded");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(nvme.swap_path()) != std::string::npos);
  }
  CHECK_THROWS_AS(ticket.wait(), Error);
}

TEST_CASE("nvme tier: buffers not from allocate_io_buffer are rejected") {
  auto store = make_shard_store(StorageTier::nvme, {1023}, nvme_options("swap_misaligned"));
  auto buf = allocate_io_buffer(2048);
  try {
    store->write_async(0, buf.get() + 1);
    FAIL("a misaligned buffer was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("allocate_io_buffer") != std::string::npos);
  }
  CHECK_THROWS_AS(store->read_async(0, buf.get() + 16), Error);
}

TEST_CASE("nvme tier: a swap file that cannot be reserved is an input error and leaves nothing behind") {
  NvmeOptions options = nvme_options("swap_too_big/rank0");
  try {
    make_shard_store(StorageTier::nvme, {int64_t{1} << 50}, options);  // 4 PiB
    FAIL("a 4 PiB swap file was reserved");
  } catch (const InputError& e) {
    std::string message = e.what();
    CHECK(message.find("zero.nvme_path") != std::string::npos);
    CHECK(message.find("cannot reserve") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(test_dir() + "/swap_too_big"));
}

TEST_CASE("nvme tier: a filesystem that refuses O_DIRECT is an input error naming zero.nvme_path") {
  // tmpfs refused O_DIRECT before Linux 6.6; newer kernels accept it, and then this is skipped.
  std::string probe = fmt::format("/dev/shm/dilatron_odirect_probe_{}", ::getpid());
  int fd = ::open(probe.c_str(), O_CREAT | O_RDWR | O_DIRECT, 0600);
  ::unlink(probe.c_str());
  if (fd >= 0 || errno != EINVAL) {
    if (fd >= 0) ::close(fd);
    MESSAGE("/dev/shm accepts O_DIRECT (or is missing) on this kernel: the refusal is not exercised");
    return;
  }
  NvmeOptions options;
  options.directory = fmt::format("/dev/shm/dilatron_shard_store_test_{}/rank0", ::getpid());
  try {
    make_shard_store(StorageTier::nvme, {1024}, options);
    FAIL("O_DIRECT was refused by the probe but accepted by the store");
  } catch (const InputError& e) {
    std::string message = e.what();
    CHECK(message.find("zero.nvme_path") != std::string::npos);
    CHECK(message.find("O_DIRECT") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(fmt::format("/dev/shm/dilatron_shard_store_test_{}", ::getpid())));
}

TEST_CASE("allocate_io_buffer is 4096-byte aligned") {
  for (int64_t elements : {0L, 1L, 1023L, 1025L}) {
    auto buf = allocate_io_buffer(elements);
    CHECK(reinterpret_cast<uintptr_t>(buf.get()) % 4096 == 0);
  }
}

}  // namespace
}  // namespace dilatron
