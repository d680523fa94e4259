// GPT-2 weights under Hugging Face's GPT2LMHeadModel names, mapped to and from
// the model's flat parameter buffer (llm.c's order, runtime/model/config.h
// ParamLayout) through the shared tensor table (runtime/io/hf_tensors.h).
//
// Contract: load_hf_gpt2 requires exactly the tensors of the config's shape,
// with or without the "transformer." prefix: wte, wpe, h.{l}.ln_1,
// attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj (weight and bias),
// ln_f. Conv1D weights, stored [in, out], are transposed to the model's
// [out, in]; wte's V rows fill the first V of Vp rows, the padding rows are
// zero. lm_head.weight, when present, must equal wte (GPT-2's head is tied).
// The attention mask buffers (h.{l}.attn.bias, h.{l}.attn.masked_bias) are
// ignored. A tensor missing, of another shape, of a non-float dtype, unknown,
// or holding a non-finite value is an InputError naming the file and the
// tensor. save_hf_gpt2 writes the same names (with "transformer.", without the
// tied lm_head) in F32 or BF16, and config.json beside them.
#pragma once

#include <string>
#include <vector>

#include "runtime/io/model_file.h"
#include "runtime/io/safetensors.h"

namespace myelin {

// `cfg`: the GPT-2 config read from the checkpoint's config.json.
ModelFile load_hf_gpt2(const SafetensorsCheckpoint& ck, const ModelConfig& cfg);
// Writes `path` (a .safetensors file) and config.json in its folder.
void save_hf_gpt2(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params,
                  StDtype dtype);

} // namespace myelin
