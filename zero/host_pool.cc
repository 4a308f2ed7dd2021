#include "zero/host_pool.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "core/check.h"

namespace dilatron {

HostPool::HostPool(int threads) {
  DILATRON_CHECK_INPUT(threads >= 1, "zero.host_threads must be >= 1, got {}", threads);
  workers_.reserve(static_cast<size_t>(threads - 1));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

HostPool::~HostPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  workers_.clear();  // joins
}

void HostPool::take_tasks(const std::function<void(int64_t)>& task, int64_t count) {
  for (;;) {
    int64_t i;
    {
      std::lock_guard lock(mutex_);
      if (next_ >= count) return;
      i = next_++;
    }
    try {
      task(i);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void HostPool::work() {
  uint64_t seen = 0;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    const std::function<void(int64_t)>& task = *task_;
    const int64_t count = count_;
    lock.unlock();
    take_tasks(task, count);
    lock.lock();
    if (--unfinished_workers_ == 0) finished_.notify_one();
  }
}

void HostPool::run(int64_t count, const std::function<void(int64_t)>& task) {
  if (count <= 0) return;
  if (workers_.empty() || count == 1) {  // waking the workers would cost more than it saves
    for (int64_t i = 0; i < count; ++i) task(i);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    task_ = &task;
    count_ = count;
    next_ = 0;
    error_ = nullptr;
    unfinished_workers_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  take_tasks(task, count);
  std::unique_lock lock(mutex_);
  // Every worker leaves this run before the next can start, so none takes a task of the next
  // run with this run's function.
  finished_.wait(lock, [&] { return unfinished_workers_ == 0; });
  task_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void HostPool::for_each_chunk(int64_t n, const std::function<void(int64_t, int64_t)>& f) {
  run((n + kHostChunkElements - 1) / kHostChunkElements, [&](int64_t k) {
    const int64_t begin = k * kHostChunkElements;
    f(begin, std::min(n, begin + kHostChunkElements));
  });
}

int auto_host_threads(int ranks_on_node) {
  const int node_cpus = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  int allowed = node_cpus;
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) allowed = std::max(1, CPU_COUNT(&mask));
  return std::max(1, std::min(allowed, node_cpus / std::max(1, ranks_on_node)));
}

void host_copy(HostPool& pool, const float* src, int64_t n, float* dst) {
  pool.for_each_chunk(n, [&](int64_t b, int64_t e) { std::copy(src + b, src + e, dst + b); });
}

void host_fill(HostPool& pool, float* x, int64_t n, float value) {
  // memset zeroes faster than a loop of vector stores (48 vs 80 ms for 124M floats, one thread).
  const bool zero_bits = value == 0.0f && !std::signbit(value);
  pool.for_each_chunk(n, [&](int64_t b, int64_t e) {
    if (zero_bits)
      std::memset(x + b, 0, static_cast<size_t>(e - b) * sizeof(float));
    else
      std::fill(x + b, x + e, value);
  });
}

void host_add(HostPool& pool, const float* src, int64_t n, float* dst) {
  pool.for_each_chunk(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] += src[i];
  });
}

void host_scale(HostPool& pool, float* x, int64_t n, float factor) {
  pool.for_each_chunk(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] *= factor;
  });
}

namespace {

double chunk_sum_of_squares(const float* x, int64_t n) {
  double lane[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) lane[j] += static_cast<double>(x[i + j]) * static_cast<double>(x[i + j]);
  for (int j = 0; i < n; ++i, ++j) lane[j] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

}  // namespace

double host_sum_of_squares(HostPool& pool, const float* x, int64_t n) {
  std::vector<double> chunk_sums(static_cast<size_t>((n + kHostChunkElements - 1) / kHostChunkElements));
  pool.for_each_chunk(n, [&](int64_t b, int64_t e) {
    chunk_sums[static_cast<size_t>(b / kHostChunkElements)] = chunk_sum_of_squares(x + b, e - b);
  });
  double sum = 0;
  for (double s : chunk_sums) sum += s;
  return sum;
}

}  // namespace dilatron
