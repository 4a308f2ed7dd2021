#include "trainer/stop_signal.h"

#include <atomic>
#include <csignal>

#include "core/check.h"

namespace dilatron {
namespace {

std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler may only touch lock-free atomics");

extern "C" void on_stop_signal(int signo) { g_stop_signal.store(signo); }

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  // SA_RESTART: a signal arriving during file I/O must not turn a write into an error.
  action.sa_flags = SA_RESTART;
  DILATRON_CHECK_SYSCALL(sigaction(SIGINT, &action, nullptr), "sigaction(SIGINT)");
  DILATRON_CHECK_SYSCALL(sigaction(SIGTERM, &action, nullptr), "sigaction(SIGTERM)");
}

bool stop_requested() { return g_stop_signal.load() != 0; }

int stop_signal_number() { return g_stop_signal.load(); }

}  // namespace dilatron
