// nccl-tests-style checks of MpiCommunicator, run on 1, 2, 3, 4 and 8 ranks. Each rank's
// input is a pure function of (seed, rank, element) (Philox), so every rank computes the
// expected result of a collective from the formula alone, without another collective. Values
// are small integers or dyadic fractions whose sums are exact in the dtype, so the expected
// sum does not depend on the order MPI adds in and results compare exactly. Each rank counts
// its wrong elements; the count is summed over ranks and must be zero.
#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "comm/collectives_test_values.h"
#include "comm/mpi_communicator.h"
#include "comm/process_groups.h"
#include "core/bf16.h"
#include "core/rng.h"

namespace dilatron {
namespace {

using namespace collectives_test;

// Bitwise equality, so a NaN poison left in place counts as wrong.
template <typename T> bool same(T a, T b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }

// Wrong elements summed over every rank of `comm`; the test fails on all ranks together.
int64_t wrong_on_all_ranks(Communicator& comm, int64_t wrong_here) {
  int32_t wrong = static_cast<int32_t>(std::min<int64_t>(wrong_here, INT32_MAX / 64));
  comm.all_reduce(&wrong, 1, DType::i32, ReduceOp::sum);
  return wrong;
}

template <typename T> int64_t count_wrong(const std::vector<T>& got, int64_t begin, auto expected) {
  int64_t wrong = 0;
  for (size_t i = 0; i < got.size(); ++i) wrong += !same(got[i], expected(begin + static_cast<int64_t>(i)));
  return wrong;
}

template <typename T> void check_all_reduce(Communicator& comm, int64_t count, ReduceOp op, uint64_t seed) {
  CAPTURE(count);
  std::vector<T> buf = rank_values<T>(seed, comm.rank(), 0, count);
  comm.all_reduce(buf.data(), count, dtype_of<T>(), op);
  int64_t wrong = count_wrong(buf, 0, [&](int64_t i) { return reduced<T>(seed, comm.size(), i, op); });
  CHECK(wrong_on_all_ranks(comm, wrong) == 0);
}

TEST_CASE("MpiRuntime is active and the world communicator spans every rank") {
  CHECK(MpiRuntime::active());
  auto world = mpi_world_communicator();
  int world_size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  CHECK(world->size() == world_size);
  CHECK(world->name() == "world");
  int rank = world->rank();
  world->all_reduce(&rank, 1, DType::i32, ReduceOp::sum);
  CHECK(rank == world_size * (world_size - 1) / 2);
}

TEST_CASE("all_reduce sum and max, every dtype, sizes 0, 1, odd, 1000") {
  auto world = mpi_world_communicator();
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
    CAPTURE(static_cast<int>(op));
    for (int64_t count : kSizes) {
      check_all_reduce<float>(*world, count, op, 11);
      check_all_reduce<double>(*world, count, op, 12);
      check_all_reduce<int32_t>(*world, count, op, 13);
      check_all_reduce<bf16>(*world, count, op, 14);
    }
  }
}

TEST_CASE("all_reduce of about a million elements") {
  auto world = mpi_world_communicator();
  check_all_reduce<float>(*world, kLarge + 3, ReduceOp::sum, 15);
  check_all_reduce<int32_t>(*world, kLarge, ReduceOp::max, 16);
}

TEST_CASE("bf16 sum rounds the float sum to nearest even") {
  auto world = mpi_world_communicator();
  if (world->size() < 2) return;
  // ulp(1) = 2^-7 in bf16: 1 + 2^-8 is a tie and rounds to even (1); (1 + 2^-7) + 2^-8 is a tie
  // and rounds to even (1 + 2^-6). Ranks above 1 add zeros, which round nothing.
  const float half_ulp = std::ldexp(1.0f, -8);
  const float first[] = {1.0f, 1.0f + 2 * half_ulp, 3.0f};
  const float second[] = {half_ulp, half_ulp, 0.25f};
  const float expected[] = {1.0f, 1.0f + 4 * half_ulp, 3.25f};
  std::vector<bf16> buf(3, bf16::from_float(0.0f));
  for (int i = 0; i < 3; ++i) {
    if (world->rank() == 0) buf[i] = bf16::from_float(first[i]);
    if (world->rank() == 1) buf[i] = bf16::from_float(second[i]);
  }
  world->all_reduce(buf.data(), 3, DType::bf16, ReduceOp::sum);
  int64_t wrong = 0;
  for (int i = 0; i < 3; ++i) wrong += buf[i].to_float() != expected[i];
  CHECK(wrong_on_all_ranks(*world, wrong) == 0);
}

template <typename T> void check_all_gather(Communicator& comm, int64_t count, uint64_t seed) {
  CAPTURE(count);
  std::vector<T> send = rank_values<T>(seed, comm.rank(), 0, count);
  std::vector<T> recv(static_cast<size_t>(count * comm.size()), poison<T>());
  comm.all_gather(send.data(), recv.data(), count, dtype_of<T>());
  int64_t wrong = count_wrong(recv, 0, [&](int64_t j) { return value<T>(seed, static_cast<int>(j / count), j % count); });
  CHECK(wrong_on_all_ranks(comm, wrong) == 0);
}

TEST_CASE("all_gather concatenates in rank order") {
  auto world = mpi_world_communicator();
  for (int64_t count : kSizes) {
    check_all_gather<float>(*world, count, 21);
    check_all_gather<int32_t>(*world, count, 22);
    check_all_gather<bf16>(*world, count, 23);
  }
  check_all_gather<float>(*world, kLarge / world->size() + 1, 24);
}

template <typename T> void check_reduce_scatter(Communicator& comm, int64_t count, ReduceOp op, uint64_t seed) {
  CAPTURE(count);
  const int64_t total = count * comm.size(), begin = count * comm.rank();
  std::vector<T> send = rank_values<T>(seed, comm.rank(), 0, total);
  std::vector<T> recv(static_cast<size_t>(count), poison<T>());
  comm.reduce_scatter(send.data(), recv.data(), count, dtype_of<T>(), op);
  int64_t wrong = count_wrong(recv, begin, [&](int64_t i) { return reduced<T>(seed, comm.size(), i, op); });
  CHECK(wrong_on_all_ranks(comm, wrong) == 0);
}

TEST_CASE("reduce_scatter gives each rank its block of the reduction") {
  auto world = mpi_world_communicator();
  for (int64_t count : kSizes) {
    check_reduce_scatter<float>(*world, count, ReduceOp::sum, 31);
    check_reduce_scatter<double>(*world, count, ReduceOp::sum, 32);
    check_reduce_scatter<int32_t>(*world, count, ReduceOp::sum, 33);
    check_reduce_scatter<bf16>(*world, count, ReduceOp::sum, 34);
    check_reduce_scatter<float>(*world, count, ReduceOp::max, 35);
  }
  check_reduce_scatter<float>(*world, kLarge / world->size() + 1, ReduceOp::sum, 36);
}

TEST_CASE("broadcast from every root") {
  auto world = mpi_world_communicator();
  for (int root = 0; root < world->size(); ++root) {
    CAPTURE(root);
    for (int64_t count : {int64_t{1}, int64_t{1001}, kLarge / 8}) {
      CAPTURE(count);
      std::vector<double> buf = world->rank() == root ? rank_values<double>(41, root, 0, count)
                                                      : std::vector<double>(static_cast<size_t>(count), poison<double>());
      std::vector<bf16> half = world->rank() == root ? rank_values<bf16>(42, root, 0, count)
                                                     : std::vector<bf16>(static_cast<size_t>(count), poison<bf16>());
      world->broadcast(buf.data(), count, DType::f64, root);
      world->broadcast(half.data(), count, DType::bf16, root);
      int64_t wrong = count_wrong(buf, 0, [&](int64_t i) { return value<double>(41, root, i); }) +
                      count_wrong(half, 0, [&](int64_t i) { return value<bf16>(42, root, i); });
      CHECK(wrong_on_all_ranks(*world, wrong) == 0);
    }
  }
}

TEST_CASE("send and recv around a ring") {
  auto world = mpi_world_communicator();
  const int rank = world->rank(), size = world->size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  for (int64_t count : {int64_t{0}, int64_t{7}, kLarge / 4}) {
    CAPTURE(count);
    std::vector<float> send = rank_values<float>(51, rank, 0, count);
    std::vector<float> recv(static_cast<size_t>(count), poison<float>());
    if (size > 1) {
      // Blocking calls: even ranks send first, odd ranks receive first, so the ring drains.
      if (rank % 2 == 0) {
        world->send(send.data(), count, DType::f32, next, 5);
        world->recv(recv.data(), count, DType::f32, prev, 5);
      } else {
        world->recv(recv.data(), count, DType::f32, prev, 5);
        world->send(send.data(), count, DType::f32, next, 5);
      }
    } else {
      CommRequest r = world->recv_async(recv.data(), count, DType::f32, prev, 5);
      world->send(send.data(), count, DType::f32, next, 5);
      r.wait();
    }
    int64_t wrong = count_wrong(recv, 0, [&](int64_t i) { return value<float>(51, prev, i); });
    CHECK(wrong_on_all_ranks(*world, wrong) == 0);
  }
}

TEST_CASE("send_recv shifts a ring both ways, with per-rank counts, without deadlock") {
  auto world = mpi_world_communicator();
  const int rank = world->rank(), size = world->size();
  // Rank r sends count_of(r) elements, large enough that MPI cannot buffer them eagerly.
  auto count_of = [](int r) { return int64_t{100000} + 17 * r; };
  for (int shift : {1, -1}) {
    CAPTURE(shift);
    const int dst = ((rank + shift) % size + size) % size, src = ((rank - shift) % size + size) % size;
    std::vector<int32_t> send = rank_values<int32_t>(61, rank, 0, count_of(rank));
    std::vector<int32_t> recv(static_cast<size_t>(count_of(src)), poison<int32_t>());
    world->send_recv(send.data(), count_of(rank), dst, recv.data(), count_of(src), src, DType::i32, 9);
    int64_t wrong = count_wrong(recv, 0, [&](int64_t i) { return value<int32_t>(61, src, i); });
    CHECK(wrong_on_all_ranks(*world, wrong) == 0);
  }
}

TEST_CASE("async operations overlap and may be waited in any order") {
  auto world = mpi_world_communicator();
  const int rank = world->rank(), size = world->size();
  const int64_t count = 50000;
  std::vector<float> reduce = rank_values<float>(71, rank, 0, count);
  std::vector<float> gather_send = rank_values<float>(72, rank, 0, count);
  std::vector<float> gather(static_cast<size_t>(count * size), poison<float>());
  std::vector<double> bcast = rank == 0 ? rank_values<double>(73, 0, 0, count)
                                        : std::vector<double>(static_cast<size_t>(count), poison<double>());
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  std::vector<int32_t> ring_send = rank_values<int32_t>(74, rank, 0, count);
  std::vector<int32_t> ring_recv(static_cast<size_t>(count), poison<int32_t>());

  std::vector<CommRequest> requests;
  requests.push_back(world->all_reduce_async(reduce.data(), count, DType::f32, ReduceOp::sum));
  requests.push_back(world->all_gather_async(gather_send.data(), gather.data(), count, DType::f32));
  requests.push_back(world->broadcast_async(bcast.data(), count, DType::f64, 0));
  requests.push_back(world->send_recv_async(ring_send.data(), count, next, ring_recv.data(), count, prev, DType::i32, 3));
  // Work meanwhile: the expected values are computed while the transfers are in flight.
  std::vector<float> expected_reduce(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) expected_reduce[static_cast<size_t>(i)] = reduced<float>(71, size, i, ReduceOp::sum);
  CHECK_FALSE(requests.empty());
  while (!requests.back().test()) {
  }
  for (auto it = requests.rbegin(); it != requests.rend(); ++it) it->wait();

  int64_t wrong = count_wrong(reduce, 0, [&](int64_t i) { return expected_reduce[static_cast<size_t>(i)]; }) +
                  count_wrong(gather, 0, [&](int64_t j) { return value<float>(72, static_cast<int>(j / count), j % count); }) +
                  count_wrong(bcast, 0, [&](int64_t i) { return value<double>(73, 0, i); }) +
                  count_wrong(ring_recv, 0, [&](int64_t i) { return value<int32_t>(74, prev, i); });
  CHECK(wrong_on_all_ranks(*world, wrong) == 0);
}

TEST_CASE("CommRequest: default is complete; move assignment and destruction wait") {
  CommRequest done;
  CHECK(done.test());
  done.wait();

  auto world = mpi_world_communicator();
  const int64_t count = 1000;
  std::vector<float> a = rank_values<float>(81, world->rank(), 0, count);
  std::vector<float> b = rank_values<float>(82, world->rank(), 0, count);
  {
    CommRequest request = world->all_reduce_async(a.data(), count, DType::f32, ReduceOp::sum);
    request = world->all_reduce_async(b.data(), count, DType::f32, ReduceOp::max);  // waits for the sum
    int64_t wrong = count_wrong(a, 0, [&](int64_t i) { return reduced<float>(81, world->size(), i, ReduceOp::sum); });
    CHECK(wrong == 0);
  }  // the destructor waits for the max
  int64_t wrong = count_wrong(b, 0, [&](int64_t i) { return reduced<float>(82, world->size(), i, ReduceOp::max); });
  CHECK(wrong_on_all_ranks(*world, wrong) == 0);
}

TEST_CASE("split into even and odd ranks, ordered by key") {
  auto world = mpi_world_communicator();
  const int rank = world->rank(), size = world->size();
  // Key -rank reverses the order inside each part.
  auto part = world->split(rank % 2, -rank, "parity");
  std::vector<int> members;
  for (int r = size - 1; r >= 0; --r) {
    if (r % 2 == rank % 2) members.push_back(r);
  }
  CHECK(part->name() == "parity");
  CHECK(part->size() == static_cast<int>(members.size()));
  CHECK(part->rank() == static_cast<int>(std::find(members.begin(), members.end(), rank) - members.begin()));
  int32_t sum = rank;
  part->all_reduce(&sum, 1, DType::i32, ReduceOp::sum);
  CHECK(sum == std::accumulate(members.begin(), members.end(), 0));
  std::vector<int32_t> order(members.size(), -1);
  int32_t mine = rank;
  part->all_gather(&mine, order.data(), 1, DType::i32);
  CHECK(std::equal(order.begin(), order.end(), members.begin()));
}

TEST_CASE("process groups: SP groups of consecutive ranks, DP groups across them") {
  int world_size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  for (int sp : {1, 2, world_size}) {
    if (world_size % sp != 0) continue;
    CAPTURE(sp);
    ProcessGroups groups = make_process_groups(mpi_world_communicator(), sp);
    const int rank = groups.world->rank();
    CHECK(groups.sp_size == sp);
    CHECK(groups.dp_size == world_size / sp);
    CHECK(groups.sp_rank == rank % sp);
    CHECK(groups.dp_rank == rank / sp);
    CHECK(groups.sequence_parallel->name() == "sp");
    CHECK(groups.data_parallel->name() == "dp");
    CHECK(groups.sequence_parallel->size() == groups.sp_size);
    CHECK(groups.sequence_parallel->rank() == groups.sp_rank);
    CHECK(groups.data_parallel->size() == groups.dp_size);
    CHECK(groups.data_parallel->rank() == groups.dp_rank);
    // Sums of world ranks: SP group g = {g*sp .. g*sp + sp-1}; DP group p = {p, p + sp, ...}.
    int32_t sp_sum = rank, dp_sum = rank;
    groups.sequence_parallel->all_reduce(&sp_sum, 1, DType::i32, ReduceOp::sum);
    groups.data_parallel->all_reduce(&dp_sum, 1, DType::i32, ReduceOp::sum);
    const int first = (rank / sp) * sp;
    CHECK(sp_sum == sp * first + sp * (sp - 1) / 2);
    const int dp = world_size / sp, p = rank % sp;
    CHECK(dp_sum == dp * p + sp * dp * (dp - 1) / 2);
  }
}

TEST_CASE("process groups reject a sequence_parallel that does not divide the world") {
  auto world = mpi_world_communicator();
  const int size = world->size();
  CHECK_THROWS_WITH_AS(make_process_groups(mpi_world_communicator(), size + 1),
                       doctest::Contains(fmt::format("parallel.sequence_parallel: {} does not divide the world size {}",
                                                     size + 1, size)
                                             .c_str()),
                       InputError);
  CHECK_THROWS_AS(make_process_groups(mpi_world_communicator(), 0), InputError);
}

TEST_CASE("errors: too-large counts, bad peers and MPI failures throw with the call named") {
  auto world = mpi_world_communicator();
  float x = 0;
  const int64_t too_many = int64_t{INT_MAX} + 1;
  CHECK_THROWS_WITH_AS(world->all_reduce_async(&x, too_many, DType::f32, ReduceOp::sum),
                       doctest::Contains("outside [0, INT_MAX]"), Error);
  CHECK_THROWS_AS(world->broadcast_async(&x, 1, DType::f32, world->size()), Error);
  CHECK_THROWS_AS(world->send_async(&x, 1, DType::f32, -1, 0), Error);
  // A negative tag is refused by MPI itself, and the error comes back through DILATRON_MPI_CHECK.
  CHECK_THROWS_WITH_AS(world->send_async(&x, 1, DType::f32, 0, -5), doctest::Contains("MPI_Isend"), Error);
  CHECK_THROWS_WITH_AS(world->send_recv_async(&x, 1, 0, &x, 1, 0, DType::f32, -5), doctest::Contains("MPI error"),
                       Error);
}

TEST_CASE("mpi_placement: ranks of one node are numbered 0 .. local_size - 1") {
  Placement placement = mpi_placement();
  int world_size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  // Every rank of a test runs on this machine.
  CHECK(placement.local_size == world_size);
  auto world = mpi_world_communicator();
  CHECK(placement.local_rank == world->rank());
}

}  // namespace
}  // namespace dilatron
