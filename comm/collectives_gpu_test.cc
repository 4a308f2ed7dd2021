// nccl-tests-style checks of the collectives on DEVICE buffers, for both transports that take
// them: "mpi" (MpiCommunicator staging through pinned host memory; ranks may share a GPU) and
// "nccl" (NcclCommunicator; runs only when every rank has a GPU of its own, so on one GPU only
// at np1). Needs a GPU (tags = ["gpu"]); run under mpirun at 1 and 2 ranks on one GPU, and
// unchanged at 2-8 ranks on as many GPUs.
//
// The value scheme is collectives_test.cc's: each rank's input is a pure function of (seed,
// rank, element) (Philox), every rank computes the expected result from the formula alone, and
// the values are small integers or dyadic fractions whose sums are exact in every dtype, so
// results compare bit for bit whatever order the transport adds in. Inputs are uploaded and
// results read back on the communicator's stream with no synchronisation of ours in between,
// so every check also exercises the stream ordering rule of Communicator::set_stream. Each rank
// counts its wrong elements and prints its first one; the count is summed over ranks.
#include <doctest/doctest.h>

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "comm/gpu_placement.h"
#include "comm/mpi_check.h"
#include "comm/collectives_test_values.h"
#include "comm/device_test_fixture.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "core/bf16.h"
#include "core/cuda_check.h"
#include "core/cuda_timing.h"
#include "core/device_allocator.h"
#include "core/rng.h"

namespace dilatron {
namespace {

using namespace collectives_test;

template <typename T> std::vector<T> poisoned(int64_t count) {
  return std::vector<T>(static_cast<size_t>(count), poison<T>());
}

const char* op_name(ReduceOp op) { return op == ReduceOp::sum ? "sum" : "max"; }

// ---- device buffers ----

// cudaMalloc'd; cudaFree synchronises the device, so no transfer is in flight when one goes.
template <typename T> class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t count) : count_(count) {
    DILATRON_CUDA_CHECK(cudaMalloc(&ptr_, static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T)));
  }
  ~DeviceBuffer() {
    if (ptr_) (void)cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), count_(o.count_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;

  T* data() const { return ptr_; }
  int64_t size() const { return count_; }
  size_t bytes() const { return static_cast<size_t>(count_) * sizeof(T); }

 private:
  T* ptr_ = nullptr;
  int64_t count_;
};

// Queued on `stream` and not waited for: the operation that follows must order itself after it.
template <typename T> DeviceBuffer<T> upload(const std::vector<T>& host, cudaStream_t stream) {
  DeviceBuffer<T> device(static_cast<int64_t>(host.size()));
  if (!host.empty()) {
    DILATRON_CUDA_CHECK(cudaMemcpyAsync(device.data(), host.data(), device.bytes(), cudaMemcpyHostToDevice, stream));
  }
  return device;
}

// Queued on `stream` after the operation's wait(), which is all that orders it after the result.
template <typename T> std::vector<T> download(const DeviceBuffer<T>& device, cudaStream_t stream) {
  std::vector<T> host(static_cast<size_t>(device.size()));
  if (!host.empty()) {
    DILATRON_CUDA_CHECK(cudaMemcpyAsync(host.data(), device.data(), device.bytes(), cudaMemcpyDeviceToHost, stream));
  }
  DILATRON_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// Holds `stream` for `ms` milliseconds: work queued behind it runs late, so an operation that
// does not order itself after the stream reads the data before it is written.
void stall(cudaStream_t stream, int ms) {
  cudaHostFn_t hold = [](void* arg) {
    std::this_thread::sleep_for(std::chrono::milliseconds(reinterpret_cast<intptr_t>(arg)));
  };
  DILATRON_CUDA_CHECK(cudaLaunchHostFunc(stream, hold, reinterpret_cast<void*>(static_cast<intptr_t>(ms))));
}

// ---- the GPU, the transports, and the verdict over ranks ----

using device_test::Transport;

struct DeviceFixture : device_test::DeviceFixture {
  DeviceFixture() : device_test::DeviceFixture("collectives_gpu_test") {}
};

// Bitwise equality, so a NaN poison left in place counts as wrong.
template <typename T> bool same(T a, T b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }

struct Mismatch {
  int64_t wrong = 0, first = -1;
  double got = 0, want = 0;
};

template <typename T, typename Expected> Mismatch compare(const std::vector<T>& got, Expected expected) {
  Mismatch m;
  for (size_t i = 0; i < got.size(); ++i) {
    const T want = expected(static_cast<int64_t>(i));
    if (same(got[i], want)) continue;
    if (m.wrong++ == 0) m.first = static_cast<int64_t>(i), m.got = as_double(got[i]), m.want = as_double(want);
  }
  return m;
}

// The wrong elements summed over every rank; all ranks pass or fail together, each naming its first wrong element.
void expect_all_right(MpiCommunicator& host, const Mismatch& m, const std::string& what) {
  int32_t wrong = static_cast<int32_t>(std::min<int64_t>(m.wrong, INT32_MAX / 64));
  host.all_reduce(&wrong, 1, DType::i32, ReduceOp::sum);
  INFO(fmt::format("{}: rank {} has {} wrong element(s); first at {}: got {}, want {}", what, host.rank(), m.wrong,
                   m.first, m.got, m.want));
  CHECK(wrong == 0);
}

template <typename T> std::string describe(const Transport& t, const std::string& op, int64_t count) {
  return fmt::format("{} {} of {} {}", t.name, op, count, dtype_name(dtype_of<T>()));
}

// ---- the checks ----

template <typename T> void check_all_reduce(DeviceFixture& f, Transport& t, int64_t count, ReduceOp op, uint64_t seed) {
  Communicator& comm = *t.comm;
  DeviceBuffer<T> buf = upload(rank_values<T>(seed, comm.rank(), 0, count), f.stream());
  comm.all_reduce(buf.data(), count, dtype_of<T>(), op);
  Mismatch m = compare(download(buf, f.stream()), [&](int64_t i) { return reduced<T>(seed, comm.size(), i, op); });
  expect_all_right(f.host(), m, describe<T>(t, fmt::format("all_reduce {}", op_name(op)), count));
}

template <typename T> void check_all_gather(DeviceFixture& f, Transport& t, int64_t count, uint64_t seed) {
  Communicator& comm = *t.comm;
  DeviceBuffer<T> send = upload(rank_values<T>(seed, comm.rank(), 0, count), f.stream());
  DeviceBuffer<T> recv = upload(poisoned<T>(count * comm.size()), f.stream());
  comm.all_gather(send.data(), recv.data(), count, dtype_of<T>());
  Mismatch m = compare(download(recv, f.stream()),
                       [&](int64_t j) { return value<T>(seed, static_cast<int>(j / count), j % count); });
  expect_all_right(f.host(), m, describe<T>(t, "all_gather", count));
}

template <typename T>
void check_reduce_scatter(DeviceFixture& f, Transport& t, int64_t count, ReduceOp op, uint64_t seed) {
  Communicator& comm = *t.comm;
  const int64_t begin = count * comm.rank();
  DeviceBuffer<T> send = upload(rank_values<T>(seed, comm.rank(), 0, count * comm.size()), f.stream());
  DeviceBuffer<T> recv = upload(poisoned<T>(count), f.stream());
  comm.reduce_scatter(send.data(), recv.data(), count, dtype_of<T>(), op);
  Mismatch m =
      compare(download(recv, f.stream()), [&](int64_t i) { return reduced<T>(seed, comm.size(), begin + i, op); });
  expect_all_right(f.host(), m, describe<T>(t, fmt::format("reduce_scatter {}", op_name(op)), count));
}

template <typename T> void check_broadcast(DeviceFixture& f, Transport& t, int64_t count, int root, uint64_t seed) {
  Communicator& comm = *t.comm;
  DeviceBuffer<T> buf =
      upload(comm.rank() == root ? rank_values<T>(seed, root, 0, count) : poisoned<T>(count), f.stream());
  comm.broadcast(buf.data(), count, dtype_of<T>(), root);
  Mismatch m = compare(download(buf, f.stream()), [&](int64_t i) { return value<T>(seed, root, i); });
  expect_all_right(f.host(), m, describe<T>(t, "broadcast", count) + fmt::format(" from root {}", root));
}

// Rank r sends count_of(r) elements to rank r + shift and receives from rank r - shift.
template <typename T> void check_send_recv(DeviceFixture& f, Transport& t, int shift, uint64_t seed) {
  Communicator& comm = *t.comm;
  const int rank = comm.rank(), size = comm.size();
  auto count_of = [](int r) { return int64_t{100000} + 17 * r; };  // above MPI's eager limit
  const int dst = ((rank + shift) % size + size) % size, src = ((rank - shift) % size + size) % size;
  DeviceBuffer<T> send = upload(rank_values<T>(seed, rank, 0, count_of(rank)), f.stream());
  DeviceBuffer<T> recv = upload(poisoned<T>(count_of(src)), f.stream());
  comm.send_recv(send.data(), count_of(rank), dst, recv.data(), count_of(src), src, dtype_of<T>(), 9);
  Mismatch m = compare(download(recv, f.stream()), [&](int64_t i) { return value<T>(seed, src, i); });
  expect_all_right(f.host(), m, describe<T>(t, "send_recv", count_of(src)) + fmt::format(" shift {}", shift));
}

// ---- test cases ----

TEST_CASE("device all_reduce sum and max, every dtype, sizes 0, 1, 7, 1000 and about a million") {
  DeviceFixture f;
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
      for (int64_t count : kSizes) {
        check_all_reduce<float>(f, t, count, op, 11);
        check_all_reduce<double>(f, t, count, op, 12);
        check_all_reduce<int32_t>(f, t, count, op, 13);
        check_all_reduce<bf16>(f, t, count, op, 14);
      }
    }
    check_all_reduce<float>(f, t, kLarge + 3, ReduceOp::sum, 15);
    check_all_reduce<bf16>(f, t, kLarge + 5, ReduceOp::sum, 16);
  }
}

TEST_CASE("device all_gather concatenates in rank order, every dtype") {
  DeviceFixture f;
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    for (int64_t count : kSizes) {
      check_all_gather<float>(f, t, count, 21);
      check_all_gather<double>(f, t, count, 22);
      check_all_gather<int32_t>(f, t, count, 23);
      check_all_gather<bf16>(f, t, count, 24);
    }
    check_all_gather<float>(f, t, kLarge / t.comm->size() + 1, 25);
  }
}

TEST_CASE("device reduce_scatter gives each rank its block of the reduction, every dtype") {
  DeviceFixture f;
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    for (int64_t count : kSizes) {
      check_reduce_scatter<float>(f, t, count, ReduceOp::sum, 31);
      check_reduce_scatter<double>(f, t, count, ReduceOp::sum, 32);
      check_reduce_scatter<int32_t>(f, t, count, ReduceOp::sum, 33);
      check_reduce_scatter<bf16>(f, t, count, ReduceOp::sum, 34);
      check_reduce_scatter<float>(f, t, count, ReduceOp::max, 35);
      check_reduce_scatter<bf16>(f, t, count, ReduceOp::max, 36);
    }
    check_reduce_scatter<float>(f, t, kLarge / t.comm->size() + 1, ReduceOp::sum, 37);
  }
}

TEST_CASE("device broadcast from every root, every dtype") {
  DeviceFixture f;
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    for (int root = 0; root < t.comm->size(); ++root) {
      for (int64_t count : {int64_t{1}, int64_t{1001}, kLarge / 8}) {
        check_broadcast<double>(f, t, count, root, 41);
        check_broadcast<bf16>(f, t, count, root, 42);
        check_broadcast<float>(f, t, count, root, 43);
        check_broadcast<int32_t>(f, t, count, root, 44);
      }
    }
  }
}

TEST_CASE("device send and recv around a ring") {
  DeviceFixture f;
  const int rank = f.host().rank(), size = f.host().size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    Communicator& comm = *t.comm;
    // A rank sending to itself: NCCL runs operations in issue order on one stream, so a receive
    // issued before its own send would wait forever; self-exchange goes through send_recv.
    if (size == 1 && t.name == "nccl") continue;
    for (int64_t count : {int64_t{0}, int64_t{7}, kLarge / 4}) {
      DeviceBuffer<float> send = upload(rank_values<float>(51, rank, 0, count), f.stream());
      DeviceBuffer<float> recv = upload(poisoned<float>(count), f.stream());
      if (size > 1) {
        // Even ranks send first, odd ranks receive first, so the ring drains.
        if (rank % 2 == 0) {
          comm.send(send.data(), count, DType::f32, next, 5);
          comm.recv(recv.data(), count, DType::f32, prev, 5);
        } else {
          comm.recv(recv.data(), count, DType::f32, prev, 5);
          comm.send(send.data(), count, DType::f32, next, 5);
        }
      } else {
        CommRequest r = comm.recv_async(recv.data(), count, DType::f32, prev, 5);
        comm.send(send.data(), count, DType::f32, next, 5);
        r.wait();
      }
      Mismatch m = compare(download(recv, f.stream()), [&](int64_t i) { return value<float>(51, prev, i); });
      expect_all_right(f.host(), m, describe<float>(t, "send/recv ring", count));
    }
  }
}

TEST_CASE("device send_recv shifts a ring both ways with per-rank counts, every dtype") {
  DeviceFixture f;
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    for (int shift : {1, -1}) {
      check_send_recv<int32_t>(f, t, shift, 61);
      check_send_recv<float>(f, t, shift, 62);
      check_send_recv<double>(f, t, shift, 63);
      check_send_recv<bf16>(f, t, shift, 64);
    }
  }
}

TEST_CASE("device operations overlap and may be waited in any order") {
  DeviceFixture f;
  const int rank = f.host().rank(), size = f.host().size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  const int64_t count = 50000;
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    Communicator& comm = *t.comm;
    DeviceBuffer<float> reduce = upload(rank_values<float>(71, rank, 0, count), f.stream());
    DeviceBuffer<float> gather_send = upload(rank_values<float>(72, rank, 0, count), f.stream());
    DeviceBuffer<float> gather = upload(poisoned<float>(count * size), f.stream());
    DeviceBuffer<double> bcast =
        upload(rank == 0 ? rank_values<double>(73, 0, 0, count) : poisoned<double>(count), f.stream());
    DeviceBuffer<int32_t> ring_send = upload(rank_values<int32_t>(74, rank, 0, count), f.stream());
    DeviceBuffer<int32_t> ring_recv = upload(poisoned<int32_t>(count), f.stream());

    // Four requests in flight at once: the MPI transport holds five staging buffers meanwhile.
    std::vector<CommRequest> requests;
    requests.push_back(comm.all_reduce_async(reduce.data(), count, DType::f32, ReduceOp::sum));
    requests.push_back(comm.all_gather_async(gather_send.data(), gather.data(), count, DType::f32));
    requests.push_back(comm.broadcast_async(bcast.data(), count, DType::f64, 0));
    requests.push_back(
        comm.send_recv_async(ring_send.data(), count, next, ring_recv.data(), count, prev, DType::i32, 3));
    while (!requests.back().test()) {
    }
    for (auto it = requests.rbegin(); it != requests.rend(); ++it) it->wait();

    Mismatch m = compare(download(reduce, f.stream()),
                         [&](int64_t i) { return reduced<float>(71, size, i, ReduceOp::sum); });
    expect_all_right(f.host(), m, describe<float>(t, "overlapped all_reduce", count));
    m = compare(download(gather, f.stream()),
                [&](int64_t j) { return value<float>(72, static_cast<int>(j / count), j % count); });
    expect_all_right(f.host(), m, describe<float>(t, "overlapped all_gather", count));
    m = compare(download(bcast, f.stream()), [&](int64_t i) { return value<double>(73, 0, i); });
    expect_all_right(f.host(), m, describe<double>(t, "overlapped broadcast", count));
    m = compare(download(ring_recv, f.stream()), [&](int64_t i) { return value<int32_t>(74, prev, i); });
    expect_all_right(f.host(), m, describe<int32_t>(t, "overlapped send_recv", count));
  }
}

TEST_CASE("ordering: an operation sees earlier writes on its stream; work after wait() sees the result") {
  DeviceFixture f;
  const int rank = f.host().rank(), size = f.host().size();
  // 64 MiB of i32 per rank: an unordered read would catch the transfer (or the write) mid-way.
  const int64_t count = int64_t{16} << 20;
  // cudaMemsetAsync writes byte rank + 1 everywhere: the i32 (rank + 1) * 0x01010101.
  auto pattern = [](int r) { return static_cast<int32_t>((r + 1) * 0x01010101); };
  int32_t pattern_sum = 0;
  for (int r = 0; r < size; ++r) pattern_sum += pattern(r);
  cudaStream_t legacy = nullptr;
  for (Transport& t : f.transports()) {
    for (cudaStream_t stream : {f.stream(), legacy}) {
      const std::string where = t.name + (stream == legacy ? " on the legacy default stream" : " on a user stream");
      CAPTURE(where);
      Communicator& comm = *t.comm;
      comm.set_stream(stream);

      // Before: the data is written behind a 200 ms stall of the stream, right before the call.
      DeviceBuffer<int32_t> buf = upload(poisoned<int32_t>(count), stream);
      stall(stream, 200);
      DILATRON_CUDA_CHECK(cudaMemsetAsync(buf.data(), rank + 1, buf.bytes(), stream));
      CommRequest request = comm.all_reduce_async(buf.data(), count, DType::i32, ReduceOp::sum);
      request.wait();
      Mismatch m = compare(download(buf, stream), [&](int64_t) { return pattern_sum; });
      expect_all_right(f.host(), m, where + ": all_reduce of data written just before the call");

      // After: the result lands in a poisoned buffer and is read right after wait().
      DeviceBuffer<int32_t> send(count);
      DeviceBuffer<int32_t> recv = upload(poisoned<int32_t>(count * size), stream);
      stall(stream, 200);
      DILATRON_CUDA_CHECK(cudaMemsetAsync(send.data(), rank + 1, send.bytes(), stream));
      comm.all_gather_async(send.data(), recv.data(), count, DType::i32).wait();
      m = compare(download(recv, stream), [&](int64_t j) { return pattern(static_cast<int>(j / count)); });
      expect_all_right(f.host(), m, where + ": all_gather read right after wait()");
    }
    t.comm->set_stream(f.stream());
  }
}

TEST_CASE("device split into even and odd ranks: order by key, inherited stream") {
  DeviceFixture f;
  const int rank = f.host().rank(), size = f.host().size();
  std::vector<int32_t> members;  // key -rank reverses the order inside each part
  for (int r = size - 1; r >= 0; --r) {
    if (r % 2 == rank % 2) members.push_back(r);
  }
  int32_t member_sum = 0;
  for (int32_t r : members) member_sum += r;
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    std::unique_ptr<Communicator> part = t.comm->split(rank % 2, -rank, "parity");
    CHECK(part->name() == "parity");
    CHECK(part->stream() == f.stream());
    CHECK(part->size() == static_cast<int>(members.size()));
    CHECK(part->rank() == static_cast<int>(std::find(members.begin(), members.end(), rank) - members.begin()));

    DeviceBuffer<int32_t> sum = upload(std::vector<int32_t>{rank}, f.stream());
    part->all_reduce(sum.data(), 1, DType::i32, ReduceOp::sum);
    Mismatch m = compare(download(sum, f.stream()), [&](int64_t) { return member_sum; });
    expect_all_right(f.host(), m, t.name + " all_reduce in the parity split");

    DeviceBuffer<int32_t> mine = upload(std::vector<int32_t>{rank}, f.stream());
    DeviceBuffer<int32_t> order = upload(poisoned<int32_t>(part->size()), f.stream());
    part->all_gather(mine.data(), order.data(), 1, DType::i32);
    m = compare(download(order, f.stream()), [&](int64_t j) { return members[static_cast<size_t>(j)]; });
    expect_all_right(f.host(), m, t.name + " all_gather order in the parity split");
    part->barrier();
  }
}

TEST_CASE("host buffers: the MPI transport takes them (pinned too) and refuses a mix; NCCL refuses them") {
  DeviceFixture f;
  const int rank = f.host().rank(), size = f.host().size();
  const int64_t count = 1000;
  DeviceBuffer<float> device(count);
  std::vector<float> host(static_cast<size_t>(count * size));
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    Communicator& comm = *t.comm;
    if (t.name == "mpi") {
      CHECK_THROWS_WITH_AS(comm.all_gather_async(device.data(), host.data(), count, DType::f32),
                           doctest::Contains("1 of its buffers are in device memory and 1 in host memory"), Error);
      // The stream is set, and host buffers ignore it; pinned memory is host memory.
      std::vector<float> pageable = rank_values<float>(81, rank, 0, count);
      PinnedHostBuffer pinned(static_cast<size_t>(count) * sizeof(float));
      std::memcpy(pinned.data(), pageable.data(), pinned.bytes());
      comm.all_reduce(pageable.data(), count, DType::f32, ReduceOp::sum);
      comm.all_reduce(pinned.data(), count, DType::f32, ReduceOp::sum);
      std::vector<float> from_pinned(pinned.as<float>(), pinned.as<float>() + count);
      auto expected = [&](int64_t i) { return reduced<float>(81, size, i, ReduceOp::sum); };
      expect_all_right(f.host(), compare(pageable, expected), "mpi all_reduce of pageable host memory");
      expect_all_right(f.host(), compare(from_pinned, expected), "mpi all_reduce of pinned host memory");
    } else {
      CHECK_THROWS_WITH_AS(comm.all_reduce_async(host.data(), count, DType::f32, ReduceOp::sum),
                           doctest::Contains("NCCL needs device buffers"), Error);
      CHECK_THROWS_WITH_AS(comm.all_gather_async(device.data(), host.data(), count, DType::f32),
                           doctest::Contains("NCCL needs device buffers"), Error);
    }
  }
}

TEST_CASE("bandwidth: all_reduce of 256 MiB f32, nccl-tests bus bandwidth") {
  DeviceFixture f;
  const int64_t count = int64_t{64} << 20;
  const double bytes = static_cast<double>(count) * sizeof(float);
  const int size = f.host().size();
  // Zeros sum to zeros however often they are reduced, so the result is still checkable.
  DeviceBuffer<float> buf(count);
  DILATRON_CUDA_CHECK(cudaMemset(buf.data(), 0, buf.bytes()));
  for (Transport& t : f.transports()) {
    CAPTURE(t.name);
    // median_ms records its events on the legacy default stream.
    t.comm->set_stream(nullptr);
    const bool nccl = t.name == "nccl";
    double ms = median_ms([&] { t.comm->all_reduce(buf.data(), count, DType::f32, ReduceOp::sum); }, nccl ? 5 : 1,
                          nccl ? 20 : 5);
    f.host().all_reduce(&ms, 1, DType::f64, ReduceOp::max);  // the slowest rank sets the pace
    // nccl-tests: algbw = bytes / time; busbw = algbw * 2 (n - 1) / n, what each link carries.
    const double algbw = bytes / (ms * 1e-3) / 1e9, busbw = algbw * 2.0 * (size - 1) / size;
    if (f.host().rank() == 0) {
      std::printf("bandwidth: %s all_reduce 256 MiB f32 on %d rank(s): %.3f ms, algbw %.1f GB/s, busbw %.1f GB/s\n",
                  t.name.c_str(), size, ms, algbw, busbw);
      std::fflush(stdout);
    }
    CHECK(ms > 0);
    Mismatch m = compare(download(buf, nullptr), [](int64_t) { return 0.0f; });
    expect_all_right(f.host(), m, t.name + " all_reduce result after the timing");
    t.comm->set_stream(f.stream());
  }
}

}  // namespace
}  // namespace dilatron
#endif  // DILATRON_CUDA
