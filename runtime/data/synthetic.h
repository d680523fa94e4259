// Synthetic tasks a tiny model visibly learns, as text for the byte tokenizer.
// "addition": lines "a+b=c" with a, b uniform in [0, 10^digits), operands
// zero-padded to `digits` and the sum to digits+1 digits, written reversed
// (least significant digit first): fixed columns and carries that flow left
// to right, which a small transformer learns digit by digit ("042+517=9550").
// Deterministic in the seed.
#pragma once

#include <cstdint>
#include <string>

namespace myelin {

std::string synthetic_addition(std::uint64_t examples, int digits, std::uint64_t seed);

} // namespace myelin
