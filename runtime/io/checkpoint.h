// Checkpoint directories. A checkpoint of step N is the folder
// <dir>/step_<N> holding model.bin (llm.c format, whole model), one
// state_<rank>.bin per rank (runtime/io/train_state.h) and manifest.txt,
// written last. Every rank writes into <dir>/step_<N>.tmp; once all have
// written, rank 0 writes the manifest and renames the folder, so a crash at any
// point leaves the previous checkpoint as the newest complete one.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace myelin {

struct CheckpointPaths {
  std::string tmp_dir, final_dir;
  std::string model(bool tmp = true) const { return (tmp ? tmp_dir : final_dir) + "/model.bin"; }
  std::string state(int rank, bool tmp = true) const {
    return (tmp ? tmp_dir : final_dir) + "/state_" + std::to_string(rank) + ".bin";
  }
};

CheckpointPaths checkpoint_paths(const std::string& dir, std::uint64_t step);
// Creates the temporary folder (removing a stale one). Call on one rank first.
void begin_checkpoint(const CheckpointPaths& p);
// Writes the manifest (key=value lines) and renames tmp -> final; replaces an
// existing folder of the same step. Keeps only the newest `keep` checkpoints
// (0 = keep all).
void finish_checkpoint(const std::string& dir, const CheckpointPaths& p,
                       const std::map<std::string, std::string>& manifest, int keep);
// Newest complete checkpoint folder in dir (has manifest.txt), if any.
std::optional<std::string> latest_checkpoint(const std::string& dir);
std::map<std::string, std::string> read_manifest(const std::string& ckpt_dir);

} // namespace myelin
