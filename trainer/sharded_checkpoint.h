// Sharded checkpoints: every rank writes the parts of the training state it owns, rank 0
// writes a manifest, and any world size can read any range back, so a run resumes on the
// same or on a different number of ranks.
//
// The state is described in LOGICAL coordinates, independent of the world size: each kind of
// state ("params", "adam_m", "adam_v") is the concatenation of all tensors in the order of the
// tensor table (ParamSpec order, no padding). A rank owns some contiguous slices of it.
//
// Layout of RUN_DIR/checkpoints/step_NNNNNNNN/:
//   manifest.json            rank 0: step, world layout, resolved config, model shape, the
//                            tensor table (name, shape, dtype, logical offset), every shard
//                            file's slices (kind, logical begin, length, offset in the file)
//                            and its size and xxHash, plus caller metadata
//   shard_RRRRR.safetensors  rank R's slices, one safetensors tensor per slice, named
//                            "<kind>/<logical begin>"
// Written into a temporary directory, fsynced, renamed; then RUN_DIR/checkpoints/latest (a
// file naming the directory) is replaced atomically; the oldest beyond `keep` are removed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"

namespace dilatron {

struct CheckpointTensor {
  std::string name;
  std::vector<int64_t> shape;
  int64_t logical_offset = 0;  // in every kind's logical space
  int64_t numel = 0;
};

struct OwnedSlice {
  std::string kind;           // "params", "adam_m", "adam_v", ...
  int64_t logical_begin = 0;  // element index in that kind's logical space
  int64_t length = 0;
  const float* data = nullptr;
};

// Collective over `world`: every rank passes its slices (together they must cover each kind's
// logical space exactly once); rank 0 also writes the manifest with `metadata`. Returns the
// final directory on every rank.
std::string write_sharded_checkpoint(Communicator& world, const std::string& run_dir, int64_t step,
                                     const std::vector<CheckpointTensor>& tensors,
                                     const std::vector<OwnedSlice>& slices, const nlohmann::json& metadata,
                                     int keep);

class ShardedCheckpoint {
 public:
  // Reads and verifies the manifest and the size and checksum of every shard file; any
  // problem throws InputError naming the directory or file and what is wrong.
  static ShardedCheckpoint open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  int64_t step() const { return step_; }
  int world_size() const { return world_size_; }
  const nlohmann::json& metadata() const { return metadata_; }
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  bool has_kind(const std::string& kind) const;

  // dst (length) := elements [logical_begin, logical_begin + length) of `kind`, gathered from
  // whichever shard files hold them (reslicing for another world size).
  void read(const std::string& kind, int64_t logical_begin, int64_t length, float* dst) const;

 private:
  struct FileSlice {
    std::string file;
    int64_t logical_begin, length, file_offset;  // file_offset: bytes from the file's start
  };
  std::string dir_;
  int64_t step_ = 0;
  int world_size_ = 0;
  nlohmann::json metadata_;
  std::vector<CheckpointTensor> tensors_;
  std::map<std::string, std::vector<FileSlice>> slices_;  // by kind, sorted by logical_begin
};

// The newest checkpoint under run_dir that opens and verifies, starting from the one `latest`
// names; corrupt or incomplete ones are skipped with a warning naming them. nullopt if none.
std::optional<std::string> find_latest_checkpoint(const std::string& run_dir);

// Consolidated full-precision weights ("params" of every tensor, by name) as one safetensors
// file, plus `config.json` (the model shape, from metadata["model"]) beside it.
void export_safetensors(const ShardedCheckpoint& checkpoint, const std::string& out_path);

}  // namespace dilatron
