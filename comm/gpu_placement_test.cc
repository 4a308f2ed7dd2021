// gpu_for_local_rank: one GPU per rank, wrapping only when sharing is allowed, and errors that
// name the counts and the fix.
#include <doctest/doctest.h>

#include <set>

#include "comm/gpu_placement.h"

namespace dilatron {
namespace {

TEST_CASE("one GPU per rank while there are enough GPUs") {
  for (int local_size : {1, 2, 4, 8}) {
    for (int device_count : {local_size, 8}) {
      std::set<int> used;
      for (int local_rank = 0; local_rank < local_size; ++local_rank) {
        for (bool allow_shared : {false, true}) {
          CHECK(gpu_for_local_rank(local_rank, local_size, device_count, allow_shared) == local_rank);
        }
        used.insert(gpu_for_local_rank(local_rank, local_size, device_count, false));
      }
      CHECK(static_cast<int>(used.size()) == local_size);
    }
  }
}

TEST_CASE("more ranks than GPUs wrap around only when sharing is allowed") {
  // 2 ranks on 1 GPU (the MPI-staged GPU tests), 8 ranks on 3 GPUs.
  CHECK(gpu_for_local_rank(0, 2, 1, true) == 0);
  CHECK(gpu_for_local_rank(1, 2, 1, true) == 0);
  const int expected[] = {0, 1, 2, 0, 1, 2, 0, 1};
  for (int local_rank = 0; local_rank < 8; ++local_rank) {
    CAPTURE(local_rank);
    CHECK(gpu_for_local_rank(local_rank, 8, 3, true) == expected[local_rank]);
  }
}

TEST_CASE("more ranks than GPUs without sharing is an input error naming the counts and the fix") {
  CHECK_THROWS_WITH_AS(gpu_for_local_rank(0, 4, 2, false),
                       "4 ranks on this node but 2 CUDA device(s) visible: run at most 2 ranks per node, or set "
                       "device_sharing: allow (tests only)",
                       InputError);
  CHECK_THROWS_AS(gpu_for_local_rank(3, 4, 2, false), InputError);
}

TEST_CASE("no visible GPU is an input error, even with sharing allowed") {
  for (bool allow_shared : {false, true}) {
    CHECK_THROWS_WITH_AS(gpu_for_local_rank(0, 1, 0, allow_shared), "device: cuda but no CUDA device is visible",
                         InputError);
  }
}

// True when `call` throws an Error that is not an InputError.
template <typename Call> bool throws_bug_error(Call call) {
  try {
    call();
  } catch (const InputError&) {
    return false;
  } catch (const Error&) {
    return true;
  }
  return false;
}

TEST_CASE("a local rank outside the node is a bug, not an input error") {
  CHECK(throws_bug_error([] { gpu_for_local_rank(2, 2, 4, false); }));
  CHECK(throws_bug_error([] { gpu_for_local_rank(-1, 2, 4, false); }));
  CHECK(throws_bug_error([] { gpu_for_local_rank(0, 0, 4, false); }));
}

}  // namespace
}  // namespace dilatron
