// Checkpoint directories on disk: RUN_DIR/checkpoints/step_NNNNNNNN/ with model.safetensors
// (every tensor to restore) and state.json (the trainer's JSON state plus "step", a "files"
// table of sizes and XXH3-64 checksums, and "state_xxh3_64", the checksum of the rest of
// state.json). A directory appears under its final name only when complete (written to a
// temporary name, fsynced, renamed), so a crash leaves at worst a stale temporary directory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/safetensors.h"

namespace dilatron {

// "step_00000120" (8 digits, more past 99999999).
std::string checkpoint_dir_name(int64_t step);

// Writes the checkpoint of `step` (replacing one of the same step), removes stale temporary
// directories of dead writers, then the oldest complete checkpoints so that at most `keep`
// (>= 1) remain, never the one just written. `state` must be a JSON object. Returns the
// checkpoint's directory. Filesystem failures throw Error.
std::string write_checkpoint(const std::string& run_dir, int64_t step,
                             const std::vector<NamedTensor>& tensors, const nlohmann::json& state,
                             int keep);

struct LoadedCheckpoint {
  std::string dir;
  int64_t step;
  std::vector<NamedTensor> tensors;
  nlohmann::json state;  // as given to write_checkpoint, plus "step"
};

// Reads and verifies the sizes and checksums; any problem throws InputError naming the
// directory or file and what is wrong.
LoadedCheckpoint read_checkpoint(const std::string& dir);

// The newest checkpoint directory under run_dir that verifies; newer corrupt or incomplete
// ones are skipped with a warning. nullopt if there is none.
std::optional<std::string> find_latest_checkpoint(const std::string& run_dir);

}  // namespace dilatron
