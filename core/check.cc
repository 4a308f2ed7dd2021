#include "core/check.h"

namespace dilatron::detail {

void throw_check_failure(const char* expr, const char* file, int line, const std::string& message) {
  std::string what = fmt::format("{}:{}: check failed: {}", file, line, expr);
  if (!message.empty()) what += " (" + message + ")";
  throw Error(what);
}

}  // namespace dilatron::detail
