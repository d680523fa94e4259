// The pool's outer loop arithmetic (DiLoCo-style): average the contributors'
// pseudo-gradients (global - local parameters) weighted by the tokens each
// processed, then take one SGD step with Nesterov momentum on the global model:
//   m = mu * m + g;  update = g + mu * m;  params -= outer_lr * update.
// With mu = 0 and outer_lr = 1 this is params -= g: with one contributor the
// new global model is exactly that contributor's local model (up to rounding).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace myelin::pool {

struct OuterConfig {
  float lr = 0.7f;
  float momentum = 0.9f;
};

// sum_i (w_i / sum w) * g_i. All inputs have the same size; weights > 0.
std::vector<float> weighted_average(const std::vector<std::span<const float>>& grads,
                                    const std::vector<double>& weights);

// One Nesterov step as the update to subtract, outer_lr * (g + mu * m), with
// the momentum advanced; `momentum` has g.size() elements (zeros at first).
std::vector<float> outer_update(std::span<float> momentum, std::span<const float> g,
                                const OuterConfig& cfg);
// params -= outer_update(momentum, g, cfg).
void outer_step(std::span<float> params, std::span<float> momentum, std::span<const float> g,
                const OuterConfig& cfg);

} // namespace myelin::pool
