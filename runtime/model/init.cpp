#include "runtime/model/init.h"

#include <cmath>

#include "runtime/util/rng.h"

namespace myelin {

std::vector<float> gpt2_init(const ModelConfig& cfg, std::uint64_t seed) {
  const ParamLayout lay(cfg);
  std::vector<float> p(lay.total, 0.0f);
  Rng64 rng(seed);
  const double std_base = 0.02, std_resid = 0.02 / std::sqrt(2.0 * cfg.num_layers);
  for (int k = 0; k < kNumParamTensors; ++k) {
    float* t = p.data() + lay.offsets[k];
    const std::size_t n = lay.sizes[k];
    switch (k) {
    case kLn1w:
    case kLn2w:
    case kLnfw:
      for (std::size_t i = 0; i < n; ++i) t[i] = 1.0f;
      break;
    case kWte:
    case kLmHead: {
      if (n == 0) break; // tied head
      const std::size_t real = std::size_t(cfg.vocab_size) * cfg.channels;
      for (std::size_t i = 0; i < real; ++i) t[i] = float(rng.normal() * std_base);
      break;
    }
    case kWpe:
    case kQkvw:
    case kFcw:
      for (std::size_t i = 0; i < n; ++i) t[i] = float(rng.normal() * std_base);
      break;
    case kAttprojw:
    case kFcprojw:
      for (std::size_t i = 0; i < n; ++i) t[i] = float(rng.normal() * std_resid);
      break;
    default: // biases
      break;
    }
  }
  return p;
}

} // namespace myelin
