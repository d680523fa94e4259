#include "runtime/io/hf_gpt2.h"

#include <cstring>
#include <stdexcept>

#include "runtime/io/finite_check.h"
#include "runtime/io/hf_tensors.h"
#include "runtime/util/error.h"

namespace myelin {

namespace {
// One GPT-2 tensor: its Hugging Face name (with "{l}" for the layer) and
// whether it is a Conv1D weight stored [in, out].
struct HfTensor {
  int k; // ParamTensor
  const char* name;
  bool conv1d;
};
constexpr HfTensor kTensors[] = {{kWte, "wte.weight", false},
                                 {kWpe, "wpe.weight", false},
                                 {kLn1w, "h.{l}.ln_1.weight", false},
                                 {kLn1b, "h.{l}.ln_1.bias", false},
                                 {kQkvw, "h.{l}.attn.c_attn.weight", true},
                                 {kQkvb, "h.{l}.attn.c_attn.bias", false},
                                 {kAttprojw, "h.{l}.attn.c_proj.weight", true},
                                 {kAttprojb, "h.{l}.attn.c_proj.bias", false},
                                 {kLn2w, "h.{l}.ln_2.weight", false},
                                 {kLn2b, "h.{l}.ln_2.bias", false},
                                 {kFcw, "h.{l}.mlp.c_fc.weight", true},
                                 {kFcb, "h.{l}.mlp.c_fc.bias", false},
                                 {kFcprojw, "h.{l}.mlp.c_proj.weight", true},
                                 {kFcprojb, "h.{l}.mlp.c_proj.bias", false},
                                 {kLnfw, "ln_f.weight", false},
                                 {kLnfb, "ln_f.bias", false}};

constexpr const char* kPrefix = "transformer.";

std::string layer_name(const char* name, int l) {
  std::string s = name;
  const auto at = s.find("{l}");
  if (at != std::string::npos) s.replace(at, 3, std::to_string(l));
  return s;
}

// The Hugging Face shape of tensor k (one layer's slice for layer tensors).
std::vector<std::size_t> hf_shape(int k, const ModelConfig& c) {
  const std::size_t C = c.channels, V = c.vocab_size, T = c.max_seq_len;
  switch (k) {
  case kWte:
    return {V, C};
  case kWpe:
    return {T, C};
  case kQkvw:
    return {C, 3 * C};
  case kQkvb:
    return {3 * C};
  case kAttprojw:
    return {C, C};
  case kFcw:
    return {C, 4 * C};
  case kFcb:
    return {4 * C};
  case kFcprojw:
    return {4 * C, C};
  default:
    return {C}; // LayerNorm weights and biases, attprojb, fcprojb
  }
}

// Every tensor as a piece, named with `prefix`.
std::vector<HfPiece> pieces(const ModelConfig& cfg, const std::string& prefix) {
  const ParamLayout lay(cfg);
  std::vector<HfPiece> out;
  for (const HfTensor& t : kTensors) {
    const bool per_layer = ParamLayout::is_layer_tensor(t.k);
    const std::size_t per = per_layer ? lay.per_layer(t.k, cfg.num_layers) : 0;
    for (int l = 0; l < (per_layer ? cfg.num_layers : 1); ++l)
      out.push_back({prefix + layer_name(t.name, l), hf_shape(t.k, cfg),
                     lay.offsets[t.k] + std::size_t(l) * per, t.conv1d});
  }
  return out;
}

bool is_mask_buffer(const std::string& name) {
  return name.starts_with("h.") &&
         (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"));
}
} // namespace

ModelFile load_hf_gpt2(const SafetensorsCheckpoint& ck, const ModelConfig& cfg) {
  ModelFile m;
  m.config = cfg;
  m.version = 3;
  const std::string cfg_text = hf_config_path(ck.dir()) + ": " + cfg.describe();
  // Names without the "transformer." prefix; a name given both ways is refused.
  HfTensorMap left;
  for (const auto& [name, e] : ck.tensors()) {
    const std::string bare = name.starts_with(kPrefix) ? name.substr(std::strlen(kPrefix)) : name;
    if (!left.emplace(bare, e).second)
      throw InputError(tensor_where(e) + " is given both with and without " + kPrefix);
  }
  const ParamLayout lay(cfg);
  m.params.assign(lay.total, 0.0f); // wte's padding rows stay zero
  hf_load_pieces(ck, left, pieces(cfg, ""), m.params, cfg_text);
  hf_check_tied(ck, left, "lm_head.weight", hf_shape(kWte, cfg), m.params, lay.offsets[kWte],
                cfg_text, "differs from wte.weight (GPT-2's head is tied to wte)");
  hf_refuse_left(left, is_mask_buffer, "not a GPT-2 tensor (expected GPT2LMHeadModel names)");
  require_finite(ck.source(), "weight", cfg, m.params);
  return m;
}

void save_hf_gpt2(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params,
                  StDtype dtype) {
  if (params.size() != ParamLayout(cfg).total)
    throw std::logic_error("save_hf_gpt2: parameter count mismatch");
  hf_save_pieces(path, cfg, pieces(cfg, kPrefix), params, dtype);
}

} // namespace myelin
