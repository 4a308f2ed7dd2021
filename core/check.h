// One family of check macros. Each failed check throws an Error carrying the expression,
// file:line and a message; library code throws and main() decides the exit status, so tests
// can CHECK_THROWS. Bad user input (config, data, checkpoint, flags) throws InputError, which
// main() turns into exit status 2.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include <fmt/core.h>

namespace dilatron {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The user's input is wrong and the message says how to fix it.
class InputError : public Error {
 public:
  using Error::Error;
};

namespace detail {

inline std::string format_message() { return {}; }

template <typename... Args>
std::string format_message(fmt::format_string<Args...> f, Args&&... args) {
  return fmt::format(f, std::forward<Args>(args)...);
}

[[noreturn]] void throw_check_failure(const char* expr, const char* file, int line,
                                      const std::string& message);

}  // namespace detail
}  // namespace dilatron

// Internal invariant: a failure is a bug or an environment fault.
#define DILATRON_CHECK(cond, ...)                                                      \
  do {                                                                                 \
    if (!(cond)) [[unlikely]]                                                          \
      ::dilatron::detail::throw_check_failure(                                         \
          #cond, __FILE__, __LINE__,                                                   \
          ::dilatron::detail::format_message(__VA_OPT__(__VA_ARGS__)));                \
  } while (0)

// User input: the message alone is shown (no file:line), and the exit status is 2.
#define DILATRON_CHECK_INPUT(cond, ...)                                                \
  do {                                                                                 \
    if (!(cond)) [[unlikely]]                                                          \
      throw ::dilatron::InputError(::dilatron::detail::format_message(__VA_ARGS__));   \
  } while (0)

// A system call returning -1 on failure; errno's text joins the message.
#define DILATRON_CHECK_SYSCALL(expr, ...)                                              \
  ([&]() {                                                                             \
    auto dilatron_rc_ = (expr);                                                        \
    if (dilatron_rc_ < 0) [[unlikely]]                                                 \
      ::dilatron::detail::throw_check_failure(                                         \
          #expr, __FILE__, __LINE__,                                                   \
          ::dilatron::detail::format_message(__VA_OPT__(__VA_ARGS__)) + ": " +         \
              std::strerror(errno));                                                   \
    return dilatron_rc_;                                                               \
  }())
