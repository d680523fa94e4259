// The one place that picks a model file's format from its path, for every
// model path a user gives (train --model and --save, a pool job's
// init_checkpoint, the memory plan):
//   *.safetensors, *.index.json or a folder: Hugging Face safetensors with
//     config.json beside them; config.json's model_type picks the mapping
//     (gpt2: runtime/io/hf_gpt2.h, llama: runtime/io/hf_llama.h);
//   anything else: Myelin's model file (runtime/io/model_file.h: llm.c's
//     format for GPT-2, its Llama header for the Llama family).
// Contract: the same ModelFile and ModelConfig either way; every error is an
// InputError naming the file, field or tensor.
#pragma once

#include <string>
#include <vector>

#include "runtime/io/model_file.h"

namespace myelin {

ModelFile load_any_model(const std::string& path);
// The shape only (model file: the checked header; safetensors: config.json).
ModelConfig load_any_model_config(const std::string& path);
// Saves in the format `path` names: a model file of version 3 (fp32) or 5
// (bf16); a .safetensors file in F32 or BF16, with config.json in its folder.
void save_any_model(const std::string& path, const ModelConfig& cfg,
                    const std::vector<float>& params, bool bf16);
// True when `path` would be saved as safetensors.
bool saves_as_safetensors(const std::string& path);

} // namespace myelin
