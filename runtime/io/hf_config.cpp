#include "runtime/io/hf_config.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "runtime/io/file_util.h"
#include "runtime/io/json_file.h"
#include "runtime/util/error.h"
#include "runtime/util/json_fields.h"

namespace myelin {

using nlohmann::json;

namespace {
constexpr std::size_t kMaxConfigBytes = std::size_t(1) << 20;
constexpr long long kBig = 1ll << 40;
constexpr long long kIntMax = 2147483647; // the shape fields are ints; validate bounds them

// A field that must be present.
void need(const JsonFields& f, const char* key) {
  if (!f.find(key)) throw InputError(f.name(key) + ": required");
}

ModelConfig read_gpt2(const JsonFields& f) {
  long long C = 0, NH = 0, L = 0, T = 0, ctx = 0, V = 0;
  for (const char* k : {"n_embd", "n_head", "n_layer", "vocab_size"}) need(f, k);
  f.integer("n_embd", C, 1, kIntMax);
  f.integer("n_head", NH, 1, kIntMax);
  f.integer("n_layer", L, 1, kIntMax);
  f.integer("vocab_size", V, 1, kIntMax);
  f.integer("n_positions", T, 1, kIntMax);
  f.integer("n_ctx", ctx, 1, kIntMax);
  if (!T) T = ctx;
  if (!T) throw InputError(f.name("n_positions") + ": required (or n_ctx)");
  if (ctx && ctx != T)
    throw InputError(f.name("n_ctx") + ": " + std::to_string(ctx) + " disagrees with n_positions " +
                     std::to_string(T));
  std::string act = "gelu_new";
  f.text("activation_function", act);
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    throw InputError(f.name("activation_function") + ": expected gelu_new (tanh GeLU), got " +
                     json(act).dump());
  if (const json* inner = f.find("n_inner"); inner && !inner->is_null()) {
    long long I = 0;
    f.integer("n_inner", I, 1, kBig);
    if (I != 4 * C)
      throw InputError(f.name("n_inner") + ": expected null or 4 x n_embd (" +
                       std::to_string(4 * C) + "), got " + std::to_string(I));
  }
  double eps = 1e-5;
  f.number("layer_norm_epsilon", eps, 0.0, 1.0);
  if (eps != 1e-5)
    throw InputError(f.name("layer_norm_epsilon") + ": expected 1e-05 (the model's LayerNorm)");
  bool tied = true;
  f.boolean("tie_word_embeddings", tied);
  if (!tied)
    throw InputError(f.name("tie_word_embeddings") + ": GPT-2's head is tied, expected true");
  ModelConfig c;
  c.channels = int(C);
  c.num_heads = int(NH);
  c.num_layers = int(L);
  c.max_seq_len = int(T);
  c.vocab_size = int(V);
  c.padded_vocab_size = default_padded_vocab(c.vocab_size);
  const std::string prefix = f.prefix;
  c.validate([prefix](std::string_view key) {
    if (key == "channels") return prefix + "n_embd";
    if (key == "heads") return prefix + "n_head";
    if (key == "layers") return prefix + "n_layer";
    if (key == "max_seq_len") return prefix + "n_positions";
    return prefix + "vocab_size"; // vocab, padded_vocab
  });
  return c;
}

LlamaConfig read_llama(const JsonFields& f) {
  LlamaConfig c;
  for (const char* k : {"hidden_size", "intermediate_size", "num_attention_heads",
                        "num_hidden_layers", "vocab_size"})
    need(f, k);
  f.integer("hidden_size", c.hidden_size, 1, kBig);
  f.integer("intermediate_size", c.intermediate_size, 1, kBig);
  f.integer("num_attention_heads", c.num_attention_heads, 1, kBig);
  c.num_key_value_heads = c.num_attention_heads;
  f.integer("num_key_value_heads", c.num_key_value_heads, 1, kBig);
  f.integer("num_hidden_layers", c.num_hidden_layers, 1, kBig);
  f.integer("max_position_embeddings", c.max_position_embeddings, 1, kBig);
  f.integer("vocab_size", c.vocab_size, 1, kBig);
  f.number("rms_norm_eps", c.rms_norm_eps, 0.0, 1.0, true);
  f.number("rope_theta", c.rope_theta, 0.0, 1e30, true);
  f.boolean("tie_word_embeddings", c.tie_word_embeddings);
  require(c.hidden_size % c.num_attention_heads == 0, f.name("hidden_size"),
          "not a multiple of num_attention_heads");
  require(c.num_attention_heads % c.num_key_value_heads == 0, f.name("num_key_value_heads"),
          "must divide num_attention_heads");
  if (const json* rs = f.find("rope_scaling"); rs && !rs->is_null()) {
    if (!rs->is_object()) f.wrong("rope_scaling", *rs, "an object or null");
    const JsonFields s{*rs, f.name("rope_scaling") + "."};
    LlamaRopeScaling r;
    s.text("rope_type", r.rope_type);
    if (r.rope_type.empty()) s.text("type", r.rope_type);
    s.number("factor", r.factor, 0.0, 1e30, true);
    s.number("low_freq_factor", r.low_freq_factor, 0.0, 1e30, true);
    s.number("high_freq_factor", r.high_freq_factor, 0.0, 1e30, true);
    s.integer("original_max_position_embeddings", r.original_max_position_embeddings, 1, kBig);
    if (r.rope_type == "llama3") {
      need(s, "factor");
      need(s, "original_max_position_embeddings");
      require(r.high_freq_factor > r.low_freq_factor, s.name("high_freq_factor"),
              "must exceed low_freq_factor");
    }
    c.rope_scaling = r;
  }
  return c;
}
} // namespace

HfConfig read_hf_config(const std::string& path) {
  const json j = read_json_file(path, kMaxConfigBytes);
  if (!j.is_object()) throw InputError(path + ": expected a JSON object");
  const JsonFields f{j, path + ": "};
  HfConfig c;
  need(f, "model_type");
  f.text("model_type", c.model_type);
  if (c.model_type == "gpt2")
    c.gpt2 = read_gpt2(f);
  else if (c.model_type == "llama")
    c.llama = read_llama(f);
  else
    throw InputError(f.name("model_type") + ": expected gpt2 or llama, got " +
                     json(c.model_type).dump());
  return c;
}

ModelConfig require_gpt2(const HfConfig& c, const std::string& path) {
  if (!c.gpt2) throw InputError(path + ": model_type: " + c.model_type + " is not supported yet");
  return *c.gpt2;
}

void write_gpt2_config(const std::string& path, const ModelConfig& cfg) {
  const json j = {{"architectures", {"GPT2LMHeadModel"}},
                  {"model_type", "gpt2"},
                  {"activation_function", "gelu_new"},
                  {"layer_norm_epsilon", 1e-5},
                  {"n_embd", cfg.channels},
                  {"n_head", cfg.num_heads},
                  {"n_layer", cfg.num_layers},
                  {"n_positions", cfg.max_seq_len},
                  {"n_ctx", cfg.max_seq_len},
                  {"n_inner", nullptr},
                  {"vocab_size", cfg.vocab_size},
                  {"tie_word_embeddings", true}};
  const std::string text = j.dump(2) + "\n";
  write_atomic(path, [&](const ByteSink& out) { out(text.data(), text.size()); });
}

} // namespace myelin
