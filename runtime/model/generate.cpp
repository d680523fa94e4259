#include "runtime/model/generate.h"

#include <algorithm>
#include <stdexcept>

namespace myelin {

void next_token_logits(Engine& engine, const std::vector<int>& tokens, int window,
                       std::span<float> logits) {
  if (tokens.empty() || window < 1) throw std::invalid_argument("next_token_logits: no tokens");
  const int T = std::min<int>(int(tokens.size()), window);
  engine.forward(0, tokens.data() + tokens.size() - std::size_t(T), nullptr, 1, T);
  engine.last_logits(T - 1, logits);
}

std::vector<int> greedy_continue(Engine& engine, std::vector<int>& tokens, int count, int window) {
  const ModelConfig& cfg = engine.config();
  std::vector<float> logits(std::size_t(cfg.padded_vocab_size));
  std::vector<int> out;
  out.reserve(std::size_t(std::max(0, count)));
  for (int i = 0; i < count; ++i) {
    next_token_logits(engine, tokens, window, logits);
    const auto best = std::max_element(logits.begin(), logits.begin() + cfg.vocab_size);
    const int pick = int(best - logits.begin());
    tokens.push_back(pick);
    out.push_back(pick);
  }
  return out;
}

} // namespace myelin
