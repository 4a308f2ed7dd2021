#include "core/op_profiler.h"

#ifdef DILATRON_CUDA
#include <fmt/core.h>

#include <algorithm>
#include <cstdlib>

#include "core/cuda_check.h"

namespace dilatron {

OpProfiler& OpProfiler::instance() {
  static OpProfiler profiler;
  return profiler;
}

OpProfiler::OpProfiler() {
  const char* flag = std::getenv("DILATRON_PROFILE");
  enabled_ = flag != nullptr && std::string(flag) != "0" && std::string(flag) != "";
}

OpProfiler::Scope::Scope(OpProfiler& profiler, const char* name, cudaStream_t stream)
    : profiler_(profiler), stream_(stream) {
  if (profiler.enabled_) index_ = profiler.begin(name, stream);
}

OpProfiler::Scope::~Scope() {
  if (index_ >= 0) profiler_.end(index_, stream_);
}

int OpProfiler::begin(const char* name, cudaStream_t stream) {
  auto event = [this] {
    cudaEvent_t e;
    if (spare_.empty()) {
      DILATRON_CUDA_CHECK(cudaEventCreate(&e));
    } else {
      e = spare_.back();
      spare_.pop_back();
    }
    return e;
  };
  Pending p{name, event(), event()};
  DILATRON_CUDA_CHECK(cudaEventRecord(p.start, stream));
  pending_.push_back(p);
  return static_cast<int>(pending_.size()) - 1;
}

void OpProfiler::end(int index, cudaStream_t stream) {
  DILATRON_CUDA_CHECK(cudaEventRecord(pending_[index].stop, stream));
}

void OpProfiler::collect() {
  for (const Pending& p : pending_) {
    DILATRON_CUDA_CHECK(cudaEventSynchronize(p.stop));
    float ms = 0;
    DILATRON_CUDA_CHECK(cudaEventElapsedTime(&ms, p.start, p.stop));
    Total& t = totals_[p.name];
    t.ms += ms;
    ++t.calls;
    spare_.push_back(p.start);
    spare_.push_back(p.stop);
  }
  pending_.clear();
}

void OpProfiler::reset() {
  collect();
  totals_.clear();
}

std::string OpProfiler::report() const {
  std::vector<std::pair<std::string, Total>> rows(totals_.begin(), totals_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  double all = 0;
  for (const auto& [name, t] : rows) all += t.ms;
  std::string out = fmt::format("{:<28} {:>11} {:>8} {:>7}\n", "op", "total ms", "calls", "share");
  for (const auto& [name, t] : rows)
    out += fmt::format("{:<28} {:>11.2f} {:>8} {:>6.1f}%\n", name, t.ms, t.calls, all > 0 ? 100 * t.ms / all : 0.0);
  return out;
}

}  // namespace dilatron
#endif
