#include "trainer/metrics_log.h"

#include <cerrno>
#include <cstring>

#include "core/check.h"

namespace dilatron {

MetricsLog::MetricsLog(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "a");
  DILATRON_CHECK_INPUT(file_ != nullptr, "logging.run_dir: cannot open {} for appending: {}", path,
                       std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::json& row) {
  std::string line = row.dump() + "\n";
  DILATRON_CHECK(std::fwrite(line.data(), 1, line.size(), file_) == line.size(), "writing {}: {}", path_,
                 std::strerror(errno));
  DILATRON_CHECK(std::fflush(file_) == 0, "flushing {}: {}", path_, std::strerror(errno));
}

}  // namespace dilatron
