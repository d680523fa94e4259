#include "runtime/io/hf_config.h"

#include <charconv>

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

// Validates `c` naming its fields by config.json's keys (`keys`: ModelConfig
// key -> config.json key; a key not listed keeps its own name).
void validate_as(const ModelConfig& c, const std::string& prefix,
                 std::initializer_list<std::pair<std::string_view, const char*>> keys) {
  const std::vector<std::pair<std::string_view, const char*>> map(keys);
  c.validate([prefix, map](std::string_view key) {
    for (const auto& [k, v] : map)
      if (k == key) return prefix + v;
    return prefix + std::string(key);
  });
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
  validate_as(c, f.prefix,
              {{"channels", "n_embd"},
               {"heads", "n_head"},
               {"layers", "n_layer"},
               {"max_seq_len", "n_positions"},
               {"vocab", "vocab_size"},
               {"padded_vocab", "vocab_size"}});
  return c;
}

void read_rope_scaling(const JsonFields& f, ModelConfig& c) {
  const json* rs = f.find("rope_scaling");
  if (!rs || rs->is_null()) return;
  if (!rs->is_object()) f.wrong("rope_scaling", *rs, "an object or null");
  const JsonFields s{*rs, f.name("rope_scaling") + "."};
  std::string type;
  const char* type_key = s.find("rope_type") ? "rope_type" : "type";
  s.text(type_key, type);
  if (type == "default") return; // unscaled
  if (type != "llama3")
    throw InputError(s.name(type_key) + ": expected llama3 (the only scaling supported), got " +
                     json(type).dump());
  for (const char* k : {"factor", "original_max_position_embeddings"}) need(s, k);
  cpu::RopeParams& r = c.rope;
  r.llama3 = true;
  long long orig = 0;
  s.number("factor", r.factor, 0.0, 1e30, true);
  s.number("low_freq_factor", r.low_freq_factor, 0.0, 1e30, true);
  s.number("high_freq_factor", r.high_freq_factor, 0.0, 1e30, true);
  s.integer("original_max_position_embeddings", orig, 1, kBig);
  r.original_max_position = double(orig);
}

ModelConfig read_llama(const JsonFields& f) {
  long long C = 0, I = 0, NH = 0, NKV = 0, L = 0, T = 0, V = 0;
  for (const char* k : {"hidden_size", "intermediate_size", "num_attention_heads",
                        "num_hidden_layers", "max_position_embeddings", "vocab_size"})
    need(f, k);
  f.integer("hidden_size", C, 1, kIntMax);
  f.integer("intermediate_size", I, 1, kIntMax);
  f.integer("num_attention_heads", NH, 1, kIntMax);
  NKV = NH;
  f.integer("num_key_value_heads", NKV, 1, kIntMax);
  f.integer("num_hidden_layers", L, 1, kIntMax);
  f.integer("max_position_embeddings", T, 1, kIntMax);
  f.integer("vocab_size", V, 1, kIntMax);
  for (const char* k : {"attention_bias", "mlp_bias"}) {
    bool bias = false;
    f.boolean(k, bias);
    if (bias) throw InputError(f.name(k) + ": expected false (the model has no biases)");
  }
  std::string act = "silu";
  f.text("hidden_act", act);
  if (act != "silu")
    throw InputError(f.name("hidden_act") + ": expected silu (SwiGLU), got " + json(act).dump());
  if (const json* hd = f.find("head_dim"); hd && !hd->is_null()) {
    long long D = 0;
    f.integer("head_dim", D, 1, kIntMax);
    if (D * NH != C)
      throw InputError(f.name("head_dim") + ": expected hidden_size / num_attention_heads (" +
                       (C % NH == 0 ? std::to_string(C / NH) : std::string("not an integer")) +
                       "), got " + std::to_string(D));
  }
  ModelConfig c;
  c.family = Family::kLlama;
  c.channels = int(C);
  c.intermediate_size = int(I);
  c.num_heads = int(NH);
  c.num_kv_heads = int(NKV);
  c.num_layers = int(L);
  c.max_seq_len = int(T);
  c.vocab_size = int(V);
  c.padded_vocab_size = default_padded_vocab(c.vocab_size);
  double eps = 1e-6;
  f.number("rms_norm_eps", eps, 0.0, 1.0, true);
  c.norm_eps = float(eps);
  f.number("rope_theta", c.rope.theta, 0.0, 1e30, true);
  bool tied = false;
  f.boolean("tie_word_embeddings", tied);
  c.tied_head = tied;
  read_rope_scaling(f, c);
  validate_as(c, f.prefix,
              {{"channels", "hidden_size"},
               {"heads", "num_attention_heads"},
               {"layers", "num_hidden_layers"},
               {"max_seq_len", "max_position_embeddings"},
               {"vocab", "vocab_size"},
               {"padded_vocab", "vocab_size"},
               {"kv_heads", "num_key_value_heads"},
               {"norm_eps", "rms_norm_eps"},
               {"tied_head", "tie_word_embeddings"}});
  return c;
}

// The shortest decimal that reads back as `x` (so 1e-5f is written 1e-05, not
// 9.99999974738e-06).
double shortest(float x) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), x);
  double d = 0;
  std::from_chars(buf, r.ptr, d);
  return d;
}
} // namespace

ModelConfig read_hf_config(const std::string& path) {
  const json j = read_json_file(path, kMaxConfigBytes);
  if (!j.is_object()) throw InputError(path + ": expected a JSON object");
  const JsonFields f{j, path + ": "};
  std::string type;
  need(f, "model_type");
  f.text("model_type", type);
  if (type == "gpt2") return read_gpt2(f);
  if (type == "llama") return read_llama(f);
  throw InputError(f.name("model_type") + ": expected gpt2 or llama, got " + json(type).dump());
}

void write_hf_config(const std::string& path, const ModelConfig& cfg) {
  json j;
  if (!cfg.llama()) {
    j = {{"architectures", {"GPT2LMHeadModel"}},
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
  } else {
    json scaling = nullptr;
    if (cfg.rope.llama3)
      scaling = {{"rope_type", "llama3"},
                 {"factor", cfg.rope.factor},
                 {"low_freq_factor", cfg.rope.low_freq_factor},
                 {"high_freq_factor", cfg.rope.high_freq_factor},
                 {"original_max_position_embeddings", (long long)cfg.rope.original_max_position}};
    j = {{"architectures", {"LlamaForCausalLM"}},
         {"model_type", "llama"},
         {"hidden_act", "silu"},
         {"attention_bias", false},
         {"mlp_bias", false},
         {"hidden_size", cfg.channels},
         {"intermediate_size", cfg.hidden()},
         {"num_attention_heads", cfg.num_heads},
         {"num_key_value_heads", cfg.kv_heads()},
         {"head_dim", cfg.head_dim()},
         {"num_hidden_layers", cfg.num_layers},
         {"max_position_embeddings", cfg.max_seq_len},
         {"vocab_size", cfg.vocab_size},
         {"rms_norm_eps", shortest(cfg.norm_eps)},
         {"rope_theta", cfg.rope.theta},
         {"rope_scaling", scaling},
         {"tie_word_embeddings", cfg.tied_head},
         {"torch_dtype", "float32"}};
  }
  const std::string text = j.dump(2) + "\n";
  write_atomic(path, [&](const ByteSink& out) { out(text.data(), text.size()); });
}

} // namespace myelin
