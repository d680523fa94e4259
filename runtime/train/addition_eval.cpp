#include "runtime/train/addition_eval.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "runtime/data/synthetic.h"
#include "runtime/data/tokenizer.h"
#include "runtime/model/generate.h"

namespace myelin {

std::string ExactMatch::describe() const {
  char b[128];
  std::snprintf(b, sizeof(b), "exact-match accuracy: %.1f%% (%llu/%llu held-out problems)",
                percent(), static_cast<unsigned long long>(correct),
                static_cast<unsigned long long>(total));
  return b;
}

ExactMatch addition_exact_match(Engine& engine, int digits, std::uint64_t examples, int window,
                                int part, int parts, int show) {
  const auto problems = held_out_addition(examples, digits, kAdditionEvalSeed);
  ExactMatch r;
  for (std::size_t i = std::size_t(part); i < problems.size(); i += std::size_t(parts)) {
    std::vector<int> tokens;
    for (const std::uint16_t t : ByteTokenizer::encode(addition_prompt(problems[i], digits)))
      tokens.push_back(t);
    const std::string answer =
        ByteTokenizer::decode(greedy_continue(engine, tokens, digits + 1, window));
    const std::string expected = addition_answer(problems[i], digits);
    ++r.total;
    if (answer == expected) ++r.correct;
    if (r.shown.size() < std::size_t(std::max(0, show)))
      r.shown.push_back(addition_prompt(problems[i], digits) + answer +
                        (answer == expected ? " right" : " wrong, expected " + expected));
  }
  return r;
}

} // namespace myelin
