// Where a GPU step's time goes, op by op, without an external profiler (the GPU machines have
// no Nsight Systems): with DILATRON_PROFILE=1 in the environment, every profiled op's launches
// are bracketed by a pair of CUDA events on its stream, and collect() (called where the stream is
// synchronised anyway) adds up the elapsed times per op name. Without the variable a scope costs
// one branch. Events between kernels add a little launch overhead; use it to rank ops, and take
// throughput from unprofiled runs.
#pragma once

#ifdef DILATRON_CUDA
#include <cuda_runtime.h>

#include <map>
#include <string>
#include <vector>

namespace dilatron {

class OpProfiler {
 public:
  // The process's profiler; enabled() says whether DILATRON_PROFILE was set.
  static OpProfiler& instance();
  bool enabled() const { return enabled_; }

  class Scope {
   public:
    Scope(OpProfiler& profiler, const char* name, cudaStream_t stream);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpProfiler& profiler_;
    int index_ = -1;  // into profiler_.pending_, or -1 when disabled
    cudaStream_t stream_;
  };

  // Waits for the recorded events and adds their times to the totals.
  void collect();
  // Drops everything measured so far (the warm-up: lazy kernel loading, cuBLASLt's first calls).
  void reset();
  // One line per op, most time first: total ms, calls, share of the profiled time.
  std::string report() const;

 private:
  OpProfiler();
  struct Pending {
    const char* name;
    cudaEvent_t start, stop;
  };
  struct Total {
    double ms = 0;
    long calls = 0;
  };
  int begin(const char* name, cudaStream_t stream);
  void end(int index, cudaStream_t stream);

  bool enabled_;
  std::vector<Pending> pending_;
  std::vector<cudaEvent_t> spare_;  // events reused once collected
  std::map<std::string, Total> totals_;
};

}  // namespace dilatron

#define DILATRON_PROFILE_CONCAT_(a, b) a##b
#define DILATRON_PROFILE_CONCAT(a, b) DILATRON_PROFILE_CONCAT_(a, b)
// Profiles the rest of the enclosing block as op `name` on `stream`.
#define DILATRON_PROFILE(name, stream) \
  ::dilatron::OpProfiler::Scope DILATRON_PROFILE_CONCAT(profile_scope_, __LINE__)(::dilatron::OpProfiler::instance(), name, stream)
#endif
