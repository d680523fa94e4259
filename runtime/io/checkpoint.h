// Checkpoint folders. A checkpoint of step N is the folder <dir>/step_<N> (N
// zero-padded to 8 digits, at most kMaxTrainStep) holding
//   model.bin      the whole model, Myelin's model file (runtime/io/model_file.h:
//                  llm.c's format for GPT-2, its Llama header for Llama)
//   state_<r>.bin  one per rank r of the job (runtime/io/train_state.h)
//   manifest.txt   key=value lines, written last: format=2, step, ranks, dp, pp,
//                  zero, model (ModelConfig::describe()) and, for each file
//                  above, file.<name>=<XXH64 hex> <bytes> (runtime/io/xxh64.h)
// Writing: every rank writes into <dir>/step_<N>.tmp; once all have written,
// rank 0 hashes the files, writes the manifest and renames the folder, so a
// crash at any point leaves the previous checkpoint as the newest complete one.
// Reading refuses anything that does not agree: folder name, manifest, file
// list, sizes, checksums, the state files' headers and the model's shape must
// all say the same, and weights and moments must be finite. Every refusal is an
// InputError naming the folder, the file and what mismatched.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "runtime/io/model_file.h"
#include "runtime/io/train_state.h"

namespace myelin {

struct CheckpointPaths {
  std::string tmp_dir, final_dir;
  std::string model(bool tmp = true) const { return (tmp ? tmp_dir : final_dir) + "/model.bin"; }
  std::string state(int rank, bool tmp = true) const {
    return (tmp ? tmp_dir : final_dir) + "/state_" + std::to_string(rank) + ".bin";
  }
};

// What a checkpoint's manifest says about the job that wrote it.
struct CheckpointLayout {
  std::uint64_t step = 0;
  int ranks = 1, dp = 1, pp = 1, zero = 0;
  std::string model; // ModelConfig::describe()
};

// A checkpoint folder whose name, manifest and file list agree.
struct CheckpointInfo {
  std::string dir;
  CheckpointLayout layout;
  struct File {
    std::uint64_t xxh64 = 0, bytes = 0;
  };
  std::map<std::string, File> files; // by name inside dir
};

CheckpointPaths checkpoint_paths(const std::string& dir, std::uint64_t step);
// Creates the temporary folder (removing a stale one). Call on one rank first.
void begin_checkpoint(const CheckpointPaths& p);
// Hashes model.bin and state_0..ranks-1 in the temporary folder, writes the
// manifest and renames tmp -> final; replaces an existing folder of the same
// step. Keeps only the newest `keep` checkpoints (0 = keep all); folders whose
// name is not a step it could have written are never touched.
void finish_checkpoint(const std::string& dir, const CheckpointPaths& p,
                       const CheckpointLayout& layout, int keep);

// The folder named step_<digits> with the highest step in dir, complete or
// not (read_checkpoint judges it); nullopt if dir has none or does not exist.
// A step_<digits> folder whose number exceeds kMaxTrainStep is refused.
std::optional<std::string> latest_checkpoint(const std::string& dir);
// key=value lines; a malformed or repeated line is an InputError.
std::map<std::string, std::string> read_manifest(const std::string& ckpt_dir);
// Checks folder name, manifest fields and the file list (each listed file
// present, nothing else there). Reads no payload: cheap, the same on every rank.
CheckpointInfo read_checkpoint(const std::string& ckpt_dir);
// Sizes and XXH64 of every file against the manifest (reads every byte once).
void verify_checkpoint_files(const CheckpointInfo& ck);
// model.bin, whose shape must be the manifest's (non-finite weights are refused
// by load_model).
ModelFile load_checkpoint_model(const CheckpointInfo& ck);
// state_<rank>.bin, whose step and layout must be the manifest's, with as many
// parameters as `cfg` and finite moments (second moments >= 0).
TrainState load_checkpoint_state(const CheckpointInfo& ck, int rank, const ModelConfig& cfg);

} // namespace myelin
