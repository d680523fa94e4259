#include "runtime/io/finite_check.h"

#include <cmath>
#include <sstream>

#include "runtime/util/error.h"

namespace myelin {
namespace {
// "tensor fcw of layer 2 (element 17)" for flat index i of cfg's buffer.
std::string locate(const ModelConfig& cfg, std::size_t i) {
  const ParamLayout lay(cfg);
  std::ostringstream s;
  for (int k = 0; k < kNumParamTensors; ++k) {
    if (i < lay.offsets[k] || i - lay.offsets[k] >= lay.sizes[k]) continue;
    const std::size_t at = i - lay.offsets[k];
    s << "tensor " << kParamTensorNames[k];
    if (ParamLayout::is_layer_tensor(k)) {
      const std::size_t per = lay.per_layer(k, cfg.num_layers);
      s << " of layer " << at / per << " (element " << at % per << ")";
    } else {
      s << " (element " << at << ")";
    }
    return s.str();
  }
  s << "element " << i << " beyond the model's " << lay.total << " parameters";
  return s.str();
}
} // namespace

void require_finite(const std::string& path, const char* what, const ModelConfig& cfg,
                    std::span<const float> values, std::size_t first, bool non_negative) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float x = values[i];
    if (std::isfinite(x) && !(non_negative && x < 0)) continue;
    std::ostringstream v;
    v << x;
    throw InputError(path + ": " + (std::isfinite(x) ? "negative " : "non-finite ") + what + " " +
                     v.str() + " in " + locate(cfg, first + i));
  }
}

} // namespace myelin
