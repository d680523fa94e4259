// Synthetic tasks a tiny model visibly learns, as text for the byte tokenizer.
// "addition": lines "a+b=c" with a, b in [0, 10^digits), operands zero-padded
// to `digits` and the sum to digits+1 digits, written reversed (least
// significant digit first): fixed columns and carries that flow left to right,
// which a small transformer learns digit by digit ("042+517=9550").
//
// Held-out problems: a fixed 1 in 20 of all (a, b) pairs, picked by a hash of
// the pair (not by a seed), never appear in synthetic_addition's text, whatever
// its seed; held_out_addition draws only from them. So a model trained on any
// `myelin data synthetic` output is scored on problems it has never seen.
// Both are deterministic in their seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace myelin {

struct AdditionProblem {
  std::uint64_t a = 0, b = 0;
};

// The text a model reads for a problem ("042+517=") and the answer it should
// continue with ("9550", digits+1 characters); one code path for the format.
std::string addition_prompt(const AdditionProblem& p, int digits);
std::string addition_answer(const AdditionProblem& p, int digits);
// Whether the pair belongs to the held-out set (about 1 in 20 of all pairs).
bool addition_held_out(const AdditionProblem& p, int digits);

// Training text: `examples` lines "prompt answer\n" of problems outside the
// held-out set. digits in 1..9.
std::string synthetic_addition(std::uint64_t examples, int digits, std::uint64_t seed);
// min(count, size of the held-out set) distinct held-out problems in a seeded
// random order; count <= 10^6.
std::vector<AdditionProblem> held_out_addition(std::uint64_t count, int digits, std::uint64_t seed);

} // namespace myelin
