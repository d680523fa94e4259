#include "runtime/io/hf_llama.h"

#include <stdexcept>

#include "runtime/io/finite_check.h"
#include "runtime/io/hf_tensors.h"
#include "runtime/util/error.h"

namespace myelin {

namespace {
// Every tensor of the checkpoint as a piece of the buffer, in the order saved.
std::vector<HfPiece> pieces(const ModelConfig& cfg) {
  const ParamLayout lay(cfg);
  const std::size_t C = cfg.channels, V = cfg.vocab_size, D = cfg.head_dim(), NH = cfg.num_heads,
                    NKV = cfg.kv_heads(), I = cfg.hidden(), Q = (NH + 2 * NKV) * D;
  std::vector<HfPiece> out;
  out.push_back({"model.embed_tokens.weight", {V, C}, lay.offsets[kWte]});
  for (std::size_t l = 0; l < std::size_t(cfg.num_layers); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::size_t qkv = lay.offsets[kQkvw] + l * Q * C, fc = lay.offsets[kFcw] + l * 2 * I * C;
    out.push_back({p + "input_layernorm.weight", {C}, lay.offsets[kLn1w] + l * C});
    out.push_back({p + "self_attn.q_proj.weight", {NH * D, C}, qkv});
    out.push_back({p + "self_attn.k_proj.weight", {NKV * D, C}, qkv + NH * D * C});
    out.push_back({p + "self_attn.v_proj.weight", {NKV * D, C}, qkv + (NH + NKV) * D * C});
    out.push_back({p + "self_attn.o_proj.weight", {C, NH * D}, lay.offsets[kAttprojw] + l * C * C});
    out.push_back({p + "post_attention_layernorm.weight", {C}, lay.offsets[kLn2w] + l * C});
    out.push_back({p + "mlp.gate_proj.weight", {I, C}, fc});
    out.push_back({p + "mlp.up_proj.weight", {I, C}, fc + I * C});
    out.push_back({p + "mlp.down_proj.weight", {C, I}, lay.offsets[kFcprojw] + l * C * I});
  }
  out.push_back({"model.norm.weight", {C}, lay.offsets[kLnfw]});
  if (!cfg.tied_head) out.push_back({"lm_head.weight", {V, C}, lay.offsets[kLmHead]});
  return out;
}

bool is_rotary_buffer(const std::string& name) {
  return name.starts_with("model.layers.") && name.ends_with(".self_attn.rotary_emb.inv_freq");
}
} // namespace

ModelFile load_hf_llama(const SafetensorsCheckpoint& ck, const ModelConfig& cfg) {
  if (!cfg.llama()) throw std::logic_error("load_hf_llama: not a Llama config");
  ModelFile m;
  m.config = cfg;
  m.version = 3;
  const std::string cfg_text = hf_config_path(ck.dir()) + ": " + cfg.describe();
  HfTensorMap left(ck.tensors().begin(), ck.tensors().end());
  const ParamLayout lay(cfg);
  m.params.assign(lay.total, 0.0f); // the padding rows stay zero
  hf_load_pieces(ck, left, pieces(cfg), m.params, cfg_text);
  if (cfg.tied_head)
    hf_check_tied(ck, left, "lm_head.weight",
                  {std::size_t(cfg.vocab_size), std::size_t(cfg.channels)}, m.params,
                  lay.offsets[kWte], cfg_text,
                  "differs from model.embed_tokens.weight, but config.json says "
                  "tie_word_embeddings: true");
  hf_refuse_left(left, is_rotary_buffer,
                 "not a tensor of this Llama model (expected LlamaForCausalLM names for " +
                     cfg_text + ")");
  require_finite(ck.source(), "weight", cfg, m.params);
  return m;
}

void save_hf_llama(const std::string& path, const ModelConfig& cfg,
                   const std::vector<float>& params, StDtype dtype) {
  if (!cfg.llama()) throw std::logic_error("save_hf_llama: not a Llama config");
  if (params.size() != ParamLayout(cfg).total)
    throw std::logic_error("save_hf_llama: parameter count mismatch");
  hf_save_pieces(path, cfg, pieces(cfg), params, dtype);
}

} // namespace myelin
