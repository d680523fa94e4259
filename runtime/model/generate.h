// Text generation through an Engine's forward pass (a whole model, last
// stage): no KV cache, each new token recomputes the window, which is cheap
// for the small models and short continuations this serves (samples during
// training, answers of the addition evaluation).
// Callers check that every token is inside the model's vocabulary.
#pragma once

#include <span>
#include <vector>

#include "runtime/model/engine.h"

namespace myelin {

// Logits of the token after `tokens` (non-empty), from the last `window`
// tokens (window <= the engine's max_seq()): padded_vocab_size floats in
// `logits`.
void next_token_logits(Engine& engine, const std::vector<int>& tokens, int window,
                       std::span<float> logits);

// Appends `count` tokens to `tokens`, each the most likely next token (the
// lowest id on ties) over the model's vocabulary, and returns them.
std::vector<int> greedy_continue(Engine& engine, std::vector<int>& tokens, int count, int window);

} // namespace myelin
