#include "runtime/pool/outer_opt.h"

#include <stdexcept>

namespace myelin::pool {

std::vector<float> weighted_average(const std::vector<std::span<const float>>& grads,
                                    const std::vector<double>& weights) {
  if (grads.empty() || grads.size() != weights.size())
    throw std::invalid_argument("weighted_average: need one weight per pseudo-gradient");
  double total = 0;
  for (double w : weights) {
    if (!(w > 0)) throw std::invalid_argument("weighted_average: weights must be positive");
    total += w;
  }
  const std::size_t n = grads[0].size();
  std::vector<float> out(n, 0.0f);
  for (std::size_t k = 0; k < grads.size(); ++k) {
    if (grads[k].size() != n) throw std::invalid_argument("weighted_average: size mismatch");
    const float w = float(weights[k] / total);
    const float* g = grads[k].data();
    if (k == 0) {
      for (std::size_t i = 0; i < n; ++i) out[i] = w * g[i];
    } else {
      for (std::size_t i = 0; i < n; ++i) out[i] += w * g[i];
    }
  }
  return out;
}

std::vector<float> outer_update(std::span<float> momentum, std::span<const float> g,
                                const OuterConfig& cfg) {
  if (momentum.size() != g.size()) throw std::invalid_argument("outer_update: size mismatch");
  const float mu = cfg.momentum, lr = cfg.lr;
  std::vector<float> d(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    const float m = mu * momentum[i] + g[i];
    momentum[i] = m;
    d[i] = lr * (g[i] + mu * m);
  }
  return d;
}

void outer_step(std::span<float> params, std::span<float> momentum, std::span<const float> g,
                const OuterConfig& cfg) {
  if (params.size() != g.size()) throw std::invalid_argument("outer_step: size mismatch");
  const std::vector<float> d = outer_update(momentum, g, cfg);
  for (std::size_t i = 0; i < params.size(); ++i) params[i] -= d[i];
}

} // namespace myelin::pool
