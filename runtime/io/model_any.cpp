#include "runtime/io/model_any.h"

#include "runtime/io/hf_config.h"
#include "runtime/io/hf_gpt2.h"
#include "runtime/io/hf_llama.h"
#include "runtime/io/hf_tensors.h"
#include "runtime/io/safetensors.h"

namespace myelin {

ModelFile load_any_model(const std::string& path) {
  if (!is_safetensors_path(path)) return load_model(path);
  const SafetensorsCheckpoint ck(path);
  const ModelConfig cfg = read_hf_config(hf_config_path(ck.dir()));
  return cfg.llama() ? load_hf_llama(ck, cfg) : load_hf_gpt2(ck, cfg);
}

ModelConfig load_any_model_config(const std::string& path) {
  return is_safetensors_path(path) ? read_hf_config(hf_config_path(hf_dir_of(path)))
                                   : load_model_config(path);
}

bool saves_as_safetensors(const std::string& path) { return path.ends_with(".safetensors"); }

void save_any_model(const std::string& path, const ModelConfig& cfg,
                    const std::vector<float>& params, bool bf16) {
  const StDtype dtype = bf16 ? StDtype::BF16 : StDtype::F32;
  if (!saves_as_safetensors(path))
    save_model(path, cfg, params, bf16 ? 5 : 3);
  else if (cfg.llama())
    save_hf_llama(path, cfg, params, dtype);
  else
    save_hf_gpt2(path, cfg, params, dtype);
}

} // namespace myelin
