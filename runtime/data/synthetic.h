// Synthetic tasks a tiny model visibly learns, as text for the byte tokenizer.
// "addition": lines "a+b=c" with a, b uniform in [0, 10^digits), the sum
// written reversed (least significant digit first), which a small transformer
// learns digit by digit. Deterministic in the seed.
#pragma once

#include <cstdint>
#include <string>

namespace myelin {

std::string synthetic_addition(std::uint64_t examples, int digits, std::uint64_t seed);

} // namespace myelin
