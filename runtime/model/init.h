// GPT-2 initialisation from a seed: embeddings and linear weights ~ N(0, 0.02),
// the two residual projections (attprojw, fcprojw) scaled by 1/sqrt(2L),
// LayerNorm weights 1, all biases 0, padding rows of wte 0.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/model/config.h"

namespace myelin {
std::vector<float> gpt2_init(const ModelConfig& cfg, std::uint64_t seed);
}
