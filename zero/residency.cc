#include "zero/residency.h"

#include "core/check.h"

namespace dilatron {

const char* residency_name(Residency r) {
  switch (r) {
    case Residency::not_available: return "not_available";
    case Residency::in_flight: return "in_flight";
    case Residency::available: return "available";
  }
  return "unknown";
}

void ResidencyState::move(int group, Residency from, Residency to) {
  DILATRON_CHECK(state_ == from, "group {}: illegal residency transition {} -> {} (expected from {})", group,
                 residency_name(state_), residency_name(to), residency_name(from));
  state_ = to;
}

void ResidencyState::start(int group) { move(group, Residency::not_available, Residency::in_flight); }
void ResidencyState::complete(int group) { move(group, Residency::in_flight, Residency::available); }
void ResidencyState::free(int group) { move(group, Residency::available, Residency::not_available); }

}  // namespace dilatron
