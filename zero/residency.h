// Where a ZeRO-3 bucket's gathered (full) parameters are: not gathered, being all-gathered, or
// in a full buffer. Transitions are checked, so a schedule bug fails at the call that makes it:
//   not_available --start--> in_flight --complete--> available --free--> not_available
#pragma once

namespace dilatron {

enum class Residency { not_available, in_flight, available };

const char* residency_name(Residency r);

class ResidencyState {
 public:
  Residency get() const { return state_; }
  // Each throws an Error naming `group` and both states unless the transition is legal.
  void start(int group);     // not_available -> in_flight (gather issued)
  void complete(int group);  // in_flight -> available (gather finished)
  void free(int group);      // available -> not_available (buffer back to the pool)

 private:
  void move(int group, Residency from, Residency to);
  Residency state_ = Residency::not_available;
};

}  // namespace dilatron
