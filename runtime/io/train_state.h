// Training state beside a model checkpoint: step, data position, RNG state and
// the AdamW moments (the whole buffer, or one rank's ZeRO slice). Own header
// (magic "MYELINTS", version), then the payload, then a 64-bit FNV-1a checksum
// of everything before it; loading verifies size and checksum.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/data/loader.h"

namespace myelin {

struct TrainState {
  std::uint64_t step = 0;        // completed optimizer steps
  LoaderPosition data;           // next batch of the training loader
  std::uint64_t rng = 0;         // sampler RNG state
  std::uint64_t param_count = 0; // size of the whole flat buffer (shape check)
  std::uint64_t slice_begin = 0; // first element of m/v within the flat buffer
  std::vector<float> m, v;       // slice_begin .. slice_begin + m.size()
};

void save_train_state(const std::string& path, const TrainState& s);
TrainState load_train_state(const std::string& path);

} // namespace myelin
