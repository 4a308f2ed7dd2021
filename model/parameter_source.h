// Where the model's parameters and gradients live, one group at a time: group 0 is the
// embeddings (wte, wpe), groups 1..L the blocks, group L+1 the final norm (ParamSpec::group).
// The model asks for a group just before it runs and gives it back right after, so a ZeRO-3
// source can gather a group from its shards on demand and free it again.
//
// A group's buffer holds its parameters in the flat layout of gpt_param_specs, starting at
// the group's first parameter (offset - first offset of the group).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/check.h"

namespace dilatron {

// Which groups a source has handed out, so a model that breaks the acquire/release protocol
// fails loudly instead of reading a buffer that was given back.
class HeldGroups {
 public:
  explicit HeldGroups(size_t groups) : held_(groups, false) {}
  // what: the call ("acquire", "release", ...); to: held after it.
  void mark(int group, bool to, const char* what) {
    DILATRON_CHECK(group >= 0 && group < static_cast<int>(held_.size()), "{} of group {} outside [0, {})", what,
                   group, held_.size());
    DILATRON_CHECK(held_[group] != to, "{} of group {}, which is {}", what, group,
                   held_[group] ? "already held" : "not held");
    held_[group] = to;
  }

 private:
  std::vector<bool> held_;
};

template <typename T>
class ParameterSource {
 public:
  virtual ~ParameterSource() = default;

  // The group's full parameters, valid until release(group). Acquired twice without a
  // release in between is an error.
  virtual const T* acquire(int group) = 0;
  virtual void release(int group) = 0;

  // A buffer for the group's full gradients, accumulated into (+=) by the backward, valid
  // until gradients_done(group); the source decides what its initial contents are (the
  // resident source: the gradients so far; ZeRO-3: zeros, reduce-scattered afterwards).
  virtual T* acquire_gradients(int group) = 0;
  virtual void gradients_done(int group) = 0;

  // Hint: groups the model will acquire next, in order (for prefetching). May be ignored.
  virtual void will_acquire(int group) { (void)group; }

  // For a model that keeps what it derives from the parameters (the GPU model's bf16 copies): a
  // number that changes whenever the parameters acquire() hands out may have changed. While it
  // stays the same, acquire(g) hands out the same buffer with the same contents. nullopt (the
  // default) promises nothing, as for a source that gathers every group afresh (ZeRO-3), so
  // nothing may be kept. Whether a source gives a version never changes.
  virtual std::optional<uint64_t> parameters_version() const { return std::nullopt; }
};

}  // namespace dilatron
