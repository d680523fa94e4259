// Hugging Face config.json, the model description beside safetensors weights.
//
// Contract: read_hf_config reads and parses the file (bounded in size),
// requires a JSON object with a string model_type, and reads the fields of
// that family with the JSON type each must have; errors are InputError naming
// the field as "<path>: <field>". For model_type "gpt2" it fills a ModelConfig
// (n_embd, n_head, n_layer, n_positions or the older n_ctx, vocab_size; the
// padded vocabulary is llm.c's next multiple of 128) validated by
// ModelConfig::validate under those names, and refuses what the model cannot
// compute: activation_function other than gelu_new (tanh GeLU), n_inner other
// than 4 x n_embd, layer_norm_epsilon other than 1e-5. For "llama" it fills
// LlamaConfig (not trainable yet; require_gpt2 refuses it in one line).
// write_gpt2_config writes the config.json Hugging Face's GPT2LMHeadModel
// reads, atomically.
#pragma once

#include <optional>
#include <string>

#include "runtime/model/config.h"

namespace myelin {

struct LlamaRopeScaling {
  std::string rope_type; // "llama3" (others are kept by name only)
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  long long original_max_position_embeddings = 0;
};

struct LlamaConfig {
  long long hidden_size = 0;
  long long intermediate_size = 0;
  long long num_attention_heads = 0;
  long long num_key_value_heads = 0; // defaults to num_attention_heads
  long long num_hidden_layers = 0;
  long long max_position_embeddings = 0;
  long long vocab_size = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::optional<LlamaRopeScaling> rope_scaling;
};

struct HfConfig {
  std::string model_type;
  std::optional<ModelConfig> gpt2;
  std::optional<LlamaConfig> llama;
};

// `path` names the config.json file.
HfConfig read_hf_config(const std::string& path);
// The GPT-2 config, or InputError "<path>: model_type: <type> is not supported yet".
ModelConfig require_gpt2(const HfConfig& c, const std::string& path);
void write_gpt2_config(const std::string& path, const ModelConfig& cfg);

} // namespace myelin
