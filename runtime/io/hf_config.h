// Hugging Face config.json, the model description beside safetensors weights,
// for both families.
//
// Contract: read_hf_config reads and parses the file (bounded in size),
// requires a JSON object with a string model_type, reads the fields of that
// family with the JSON type each must have, fills a ModelConfig and validates
// it through ModelConfig::validate under config.json's field names; every
// error is one InputError naming the field as "<path>: <field>".
//   "gpt2": n_embd, n_head, n_layer, n_positions (or the older n_ctx),
//     vocab_size. Refused: activation_function other than gelu_new (tanh
//     GeLU), n_inner other than null or 4 x n_embd, layer_norm_epsilon other
//     than 1e-5, tie_word_embeddings false.
//   "llama": hidden_size, intermediate_size, num_attention_heads,
//     num_key_value_heads (default: num_attention_heads), num_hidden_layers,
//     max_position_embeddings, vocab_size (all required but the kv heads),
//     rms_norm_eps (default 1e-6), rope_theta (default 10000), rope_scaling
//     (null, or rope_type/type "llama3" with factor, low_freq_factor,
//     high_freq_factor, original_max_position_embeddings; any other type is
//     refused naming rope_scaling.rope_type), tie_word_embeddings (default
//     false). Refused: attention_bias or mlp_bias true, hidden_act other than
//     silu, head_dim other than hidden_size / num_attention_heads.
// Either way the padded vocabulary is llm.c's next multiple of 128.
// write_hf_config writes, atomically, the config.json Hugging Face's
// GPT2LMHeadModel or LlamaForCausalLM reads for the config's family;
// read_hf_config gives the same ModelConfig back.
#pragma once

#include <string>

#include "runtime/model/config.h"

namespace myelin {

// `path` names the config.json file.
ModelConfig read_hf_config(const std::string& path);
void write_hf_config(const std::string& path, const ModelConfig& cfg);

} // namespace myelin
