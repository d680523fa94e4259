// Training state beside a model checkpoint: step, data position, RNG state,
// the writer's layout (rank, ranks, dp, pp, zero) and the AdamW moments (the
// whole buffer, or one rank's ZeRO slice). Own header (magic "MYELINTS",
// version 2), then the payload, then the XXH64 (runtime/io/xxh64.h) of
// everything before it. Loading verifies size and checksum and bounds every
// header field: step <= kMaxTrainStep, layout fields in range, a non-zero RNG
// state. Finite moments are checked where the model shape is known
// (runtime/io/checkpoint.h).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "runtime/data/loader.h"

namespace myelin {

// Steps are counted in an int (`--steps`); a larger step is a corrupt file.
constexpr std::uint64_t kMaxTrainStep = std::numeric_limits<int>::max();

struct TrainState {
  std::uint64_t step = 0;        // completed optimizer steps
  LoaderPosition data;           // next batch of the training loader
  std::uint64_t rng = 0;         // sampler RNG state
  std::uint64_t param_count = 0; // size of the whole flat buffer (shape check)
  std::uint64_t slice_begin = 0; // first element of m/v within the flat buffer
  // Layout of the job that wrote it: this rank of `ranks` = dp x pp, ZeRO on/off.
  std::uint32_t rank = 0, ranks = 1, dp = 1, pp = 1, zero = 0;
  std::vector<float> m, v; // slice_begin .. slice_begin + m.size()
};

void save_train_state(const std::string& path, const TrainState& s);
TrainState load_train_state(const std::string& path);

} // namespace myelin
