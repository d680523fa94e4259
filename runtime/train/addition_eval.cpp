#include "runtime/train/addition_eval.h"

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
                                int part, int parts) {
  const auto problems = held_out_addition(examples, digits, kAdditionEvalSeed);
  ExactMatch r;
  for (std::size_t i = std::size_t(part); i < problems.size(); i += std::size_t(parts)) {
    std::vector<int> tokens;
    for (const std::uint16_t t : ByteTokenizer::encode(addition_prompt(problems[i], digits)))
      tokens.push_back(t);
    const auto answer = greedy_continue(engine, tokens, digits + 1, window);
    ++r.total;
    if (ByteTokenizer::decode(answer) == addition_answer(problems[i], digits)) ++r.correct;
  }
  return r;
}

} // namespace myelin
