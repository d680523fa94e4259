// Llama-family weights under Hugging Face's LlamaForCausalLM names, mapped to
// and from the model's flat parameter buffer (runtime/model/config.h
// ParamLayout) through the shared tensor table (runtime/io/hf_tensors.h).
//
// Contract: load_hf_llama requires exactly these tensors, of the shapes the
// config gives (D = C / NH, I = intermediate size), none transposed:
//   model.embed_tokens.weight [V, C]          -> the first V rows of wte
//   model.layers.{l}.input_layernorm.weight [C]          -> ln1w
//   model.layers.{l}.self_attn.q_proj.weight [NH D, C]   -> qkvw rows 0..
//   model.layers.{l}.self_attn.k_proj.weight [NKV D, C]  -> qkvw rows NH D..
//   model.layers.{l}.self_attn.v_proj.weight [NKV D, C]  -> qkvw rows (NH+NKV) D..
//   model.layers.{l}.self_attn.o_proj.weight [C, NH D]   -> attprojw
//   model.layers.{l}.post_attention_layernorm.weight [C] -> ln2w
//   model.layers.{l}.mlp.gate_proj.weight [I, C]         -> fcw rows 0..I
//   model.layers.{l}.mlp.up_proj.weight [I, C]           -> fcw rows I..2I
//   model.layers.{l}.mlp.down_proj.weight [C, I]         -> fcprojw
//   model.norm.weight [C]                     -> lnfw
//   lm_head.weight [V, C]                     -> the first V rows of lm_head
// lm_head.weight is required when the head is untied; with a tied head it may
// be present only equal to embed_tokens. The padding rows (Vp - V) are zero.
// The rotary buffers some checkpoints keep (self_attn.rotary_emb.inv_freq) are
// ignored. A tensor missing, of another shape, of a non-float dtype, unknown,
// or holding a non-finite value is an InputError naming the file and the
// tensor. save_hf_llama writes the same names (lm_head only when untied) in
// F32 or BF16, and config.json beside them.
#pragma once

#include <string>
#include <vector>

#include "runtime/io/model_file.h"
#include "runtime/io/safetensors.h"

namespace myelin {

// `cfg`: the Llama config read from the checkpoint's config.json.
ModelFile load_hf_llama(const SafetensorsCheckpoint& ck, const ModelConfig& cfg);
// Writes `path` (a .safetensors file) and config.json in its folder.
void save_hf_llama(const std::string& path, const ModelConfig& cfg,
                   const std::vector<float>& params, StDtype dtype);

} // namespace myelin
