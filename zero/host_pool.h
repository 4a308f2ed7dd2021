// A small fixed pool of host threads for the ZeRO-3 engine's element-wise and reduction work
// (AdamW on the shards, gradient accumulation, copies, the gradient norm), which single-threaded
// bound the offload tiers: of a 5.35 s step of a 417M-parameter model on a 16-core H100 host,
// 0.09 s were copies to and from the GPU.
//
// Work is cut into fixed-size chunks of kHostChunkElements that any thread may take, so what a
// chunk computes never depends on the thread count; a reduction sums each chunk on its own and
// adds the chunk sums in chunk order, so its bits do not depend on it either.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dilatron {

// 256 KiB of floats: four streams of AdamW stay in a core's L2, and a 124M-parameter shard is
// about 1,900 chunks, enough to balance 16 threads.
constexpr int64_t kHostChunkElements = int64_t{1} << 16;

class HostPool {
 public:
  // threads >= 1: threads - 1 workers are started here, and the caller of run is the last one.
  explicit HostPool(int threads);
  ~HostPool();
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls task(i) once for each i in [0, count), on the workers and the calling thread, and
  // returns when every call has returned. If calls throw, the first exception caught is
  // rethrown here once all calls are over. Not reentrant: one run at a time.
  void run(int64_t count, const std::function<void(int64_t)>& task);

  // f(begin, end) for every chunk [k C, min((k + 1) C, n)) of [0, n), C = kHostChunkElements.
  void for_each_chunk(int64_t n, const std::function<void(int64_t, int64_t)>& f);

 private:
  void work();
  // Takes tasks of the current run until none is left.
  void take_tasks(const std::function<void(int64_t)>& task, int64_t count);

  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  uint64_t generation_ = 0;  // counts runs; a worker joins each one once
  int unfinished_workers_ = 0;
  bool stopping_ = false;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t count_ = 0;
  int64_t next_ = 0;  // the next task to take (under mutex_: tasks are chunks, not elements)
  std::exception_ptr error_;
  std::vector<std::jthread> workers_;
};

// The thread count for zero.host_threads = 0: the CPUs this process may run on (its affinity
// mask, which mpirun's binding narrows) or the node's CPUs divided among its ranks, whichever is
// smaller; at least 1.
int auto_host_threads(int ranks_on_node);

// Element-wise, chunk by chunk over the pool.
void host_copy(HostPool& pool, const float* src, int64_t n, float* dst);
void host_fill(HostPool& pool, float* x, int64_t n, float value);
void host_add(HostPool& pool, const float* src, int64_t n, float* dst);  // dst += src
void host_scale(HostPool& pool, float* x, int64_t n, float factor);

// sum of x[i]^2 in double: each chunk summed in four interleaved lanes (element i into lane
// i % 4, lanes added as (l0 + l1) + (l2 + l3); four independent chains instead of one), then
// the chunk sums added in chunk order. The same bits for every thread count.
double host_sum_of_squares(HostPool& pool, const float* x, int64_t n);

}  // namespace dilatron
