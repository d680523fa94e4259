// Exact-match evaluation of a byte-level model on held-out addition problems
// (runtime/data/synthetic.h): the model reads the prompt ("042+517=") from
// position 0, where a row of `myelin data synthetic` shards read with a
// sequence length that is a multiple of the line length always holds the start
// of a line; it continues greedily for digits+1 tokens, and a problem counts
// as solved only when every answer digit matches. The problems are those of
// held_out_addition(examples, digits, kAdditionEvalSeed), never in any
// training text `myelin data synthetic` writes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/engine.h"

namespace myelin {

inline constexpr std::uint64_t kAdditionEvalSeed = 0x6576616c; // "eval"

struct ExactMatch {
  std::uint64_t correct = 0, total = 0;
  // The first problems scored, as the model completed them ("42+17=950"),
  // each followed by " right" or " wrong, expected 950".
  std::vector<std::string> shown;
  double percent() const { return total ? 100.0 * double(correct) / double(total) : 0.0; }
  // "exact-match accuracy: 93.4% (467/500 held-out problems)"
  std::string describe() const;
};

// Scores problems part, part + parts, part + 2 parts, ... of the `examples`
// held-out problems (data-parallel ranks split the set and add their counts).
// The engine holds a whole model with a vocabulary that covers the digits and
// "+=\n" (the caller checks). window: the longest context the engine takes.
// `show`: how many of the problems scored to keep in `shown`.
ExactMatch addition_exact_match(Engine& engine, int digits, std::uint64_t examples, int window,
                                int part = 0, int parts = 1, int show = 0);

} // namespace myelin
