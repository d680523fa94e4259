#include "runtime/io/model_any.h"

#include "runtime/io/hf_gpt2.h"
#include "runtime/io/safetensors.h"

namespace myelin {

ModelFile load_any_model(const std::string& path) {
  return is_safetensors_path(path) ? load_hf_gpt2(path) : load_model(path);
}

ModelConfig load_any_model_config(const std::string& path) {
  return is_safetensors_path(path) ? load_hf_gpt2_config(path) : load_model_config(path);
}

bool saves_as_safetensors(const std::string& path) { return path.ends_with(".safetensors"); }

void save_any_model(const std::string& path, const ModelConfig& cfg,
                    const std::vector<float>& params, bool bf16) {
  if (saves_as_safetensors(path))
    save_hf_gpt2(path, cfg, params, bf16 ? StDtype::BF16 : StDtype::F32);
  else
    save_model(path, cfg, params, bf16 ? 5 : 3);
}

} // namespace myelin
