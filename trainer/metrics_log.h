// RUN_DIR/metrics.jsonl: one JSON object per logged step, appended and flushed as it happens,
// so a crashed or preempted run keeps every line it logged.
#pragma once

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace dilatron {

class MetricsLog {
 public:
  // Appends to an existing file: a resumed run continues the same log.
  explicit MetricsLog(const std::string& path);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const nlohmann::json& row);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace dilatron
