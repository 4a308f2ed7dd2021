#include <exception>

#include <spdlog/spdlog.h>

#include "zero/shard_store.h"

namespace dilatron {
namespace {

// What a ticket holds after its wait() threw: later waits rethrow the same error, so a piece
// whose read failed is never handed out, and the destructor knows the error was delivered.
class DeliveredFailure final : public IoTicket::Pending {
 public:
  explicit DeliveredFailure(std::exception_ptr error) : error_(std::move(error)) {}
  void wait() override { std::rethrow_exception(error_); }

 private:
  std::exception_ptr error_;
};

// Destructor and move-assignment policy: an undelivered failure (a ticket dropped without wait)
// would lose a write or hand out a stale piece, so it is logged and the process terminates.
// During unwinding from another exception the failure is only logged: that exception already
// reports the broken state, and terminating would hide it.
void finish_quietly(std::unique_ptr<IoTicket::Pending>& pending) noexcept {
  if (!pending || dynamic_cast<DeliveredFailure*>(pending.get()) != nullptr) return;
  try {
    pending->wait();
  } catch (const std::exception& e) {
    if (std::uncaught_exceptions() > 0) {
      spdlog::error("I/O failed while unwinding from another error: {}", e.what());
    } else {
      spdlog::critical("I/O failed and nobody waited for it: {}", e.what());
      std::terminate();
    }
  }
  pending.reset();
}

}  // namespace

IoTicket& IoTicket::operator=(IoTicket&& other) noexcept {
  if (this != &other) {
    finish_quietly(pending_);
    pending_ = std::move(other.pending_);
  }
  return *this;
}

IoTicket::~IoTicket() { finish_quietly(pending_); }

void IoTicket::wait() {
  if (!pending_) return;
  try {
    pending_->wait();
  } catch (...) {
    pending_ = std::make_unique<DeliveredFailure>(std::current_exception());
    throw;
  }
  pending_.reset();
}

}  // namespace dilatron
