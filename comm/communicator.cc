#include "comm/communicator.h"

#include <cstdio>
#include <exception>

namespace dilatron {

// noexcept as declared: an old request that cannot complete leaves a buffer in an unknown
// state, and terminating is the only safe answer.
CommRequest& CommRequest::operator=(CommRequest&& other) noexcept {
  if (this != &other) {
    wait();
    pending_ = std::move(other.pending_);
  }
  return *this;
}

CommRequest::~CommRequest() {
  try {
    wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "CommRequest destroyed while its operation failed: %s\n", e.what());
    std::terminate();
  }
}

void CommRequest::wait() {
  // Released before waiting: a failed wait is reported once, not again by the destructor.
  std::unique_ptr<Pending> pending = std::move(pending_);
  if (pending) pending->wait();
}

bool CommRequest::test() {
  if (!pending_) return true;
  if (!pending_->test()) return false;
  pending_.reset();
  return true;
}

}  // namespace dilatron
