#include "runtime/model/config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>

#include "runtime/util/checked.h"
#include "runtime/util/error.h"

namespace myelin {

const std::array<const char*, kNumParamTensors> kParamTensorNames = {
    "wte",  "wpe", "ln1w", "ln1b",    "qkvw",    "qkvb", "attprojw", "attprojb", "ln2w",
    "ln2b", "fcw", "fcb",  "fcprojw", "fcprojb", "lnfw", "lnfb",     "lm_head"};

FieldNamer flag_names() {
  return [](std::string_view key) {
    std::string f = "--" + std::string(key);
    for (char& ch : f)
      if (ch == '_') ch = '-';
    return f;
  };
}

Family parse_family(const std::string& name, const std::string& where) {
  if (name == "gpt2") return Family::kGpt2;
  if (name == "llama") return Family::kLlama;
  throw InputError(where + ": expected gpt2 or llama, got '" + name.substr(0, 40) + "'");
}
const char* family_name(Family f) { return f == Family::kLlama ? "llama" : "gpt2"; }

FieldNamer key_names(std::string prefix) {
  return [prefix = std::move(prefix)](std::string_view key) { return prefix + std::string(key); };
}

namespace {
// Element counts of the 17 tensors (see config.h), nullopt when a field is
// not positive or a product overflows.
std::optional<std::array<std::size_t, kNumParamTensors>> tensor_sizes(const ModelConfig& c) {
  if (c.max_seq_len <= 0 || c.padded_vocab_size <= 0 || c.num_layers <= 0 || c.channels <= 0 ||
      c.num_heads <= 0 || c.num_kv_heads < 0 || c.intermediate_size < 0)
    return std::nullopt;
  // In 64 bits: the int helpers (hidden(), qkv_width(), ...) may overflow on
  // a shape that validate() has not yet refused.
  const std::size_t Vp = c.padded_vocab_size, C = c.channels, L = c.num_layers, T = c.max_seq_len,
                    NH = std::size_t(c.num_heads), D = C / NH,
                    NKV = c.num_kv_heads > 0 ? std::size_t(c.num_kv_heads) : NH,
                    Q = (NH + 2 * NKV) * D,
                    I = c.intermediate_size > 0 ? std::size_t(c.intermediate_size) : 4 * C,
                    F = c.llama() ? 2 * I : I;
  const bool g = !c.llama();
  const std::optional<std::size_t> z = 0;
  const std::optional<std::size_t> v[kNumParamTensors] = {
      checked_mul({Vp, C}),                    // wte
      g ? checked_mul({T, C}) : z,             // wpe
      checked_mul({L, C}),                     // ln1w
      g ? checked_mul({L, C}) : z,             // ln1b
      checked_mul({L, Q, C}),                  // qkvw
      g ? checked_mul({L, Q}) : z,             // qkvb
      checked_mul({L, C, C}),                  // attprojw
      g ? checked_mul({L, C}) : z,             // attprojb
      checked_mul({L, C}),                     // ln2w
      g ? checked_mul({L, C}) : z,             // ln2b
      checked_mul({L, F, C}),                  // fcw
      g ? checked_mul({L, F}) : z,             // fcb
      checked_mul({L, C, I}),                  // fcprojw
      g ? checked_mul({L, C}) : z,             // fcprojb
      C,                                       // lnfw
      g ? std::optional<std::size_t>(C) : z,   // lnfb
      c.tied_head ? z : checked_mul({Vp, C})}; // lm_head
  std::array<std::size_t, kNumParamTensors> out{};
  for (int k = 0; k < kNumParamTensors; ++k) {
    if (!v[k]) return std::nullopt;
    out[k] = *v[k];
  }
  return out;
}

void in_range(long long v, long long lo, long long hi, const FieldNamer& name, const char* key) {
  require(v >= lo && v <= hi, name(key),
          "expected " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
              std::to_string(v));
}
} // namespace

void ModelConfig::validate(const FieldNamer& name) const {
  in_range(channels, 1, kMaxChannels, name, "channels");
  in_range(num_heads, 1, channels, name, "heads");
  require(channels % num_heads == 0, name("channels"),
          std::to_string(channels) + " is not a multiple of heads (" + std::to_string(num_heads) +
              ")");
  in_range(num_layers, 1, kMaxLayers, name, "layers");
  in_range(max_seq_len, 1, kMaxSeqLen, name, "max_seq_len");
  in_range(vocab_size, 1, kMaxVocab, name, "vocab");
  in_range(padded_vocab_size, vocab_size, kMaxVocab, name, "padded_vocab");
  // 0 stands for the default (as many kv heads as heads; 4 x channels).
  require(num_kv_heads >= 0, name("kv_heads"),
          "expected 0 (as many as heads) or a positive count, got " + std::to_string(num_kv_heads));
  require(intermediate_size >= 0, name("intermediate_size"),
          "expected 0 (4 x channels) or a positive width, got " +
              std::to_string(intermediate_size));
  if (!llama()) {
    require(family == Family::kGpt2, name("family"), "expected gpt2 or llama");
    require(num_kv_heads == 0 || num_kv_heads == num_heads, name("kv_heads"),
            "GPT-2 has as many key/value heads as heads");
    require(intermediate_size == 0 || intermediate_size == 4 * channels, name("intermediate_size"),
            "GPT-2's MLP is 4 x channels wide");
    require(tied_head, name("tied_head"), "GPT-2's head is tied to wte");
  } else {
    in_range(kv_heads(), 1, num_heads, name, "kv_heads");
    require(num_heads % kv_heads() == 0, name("kv_heads"),
            std::to_string(kv_heads()) + " does not divide heads (" + std::to_string(num_heads) +
                ")");
    in_range(hidden(), 1, kMaxIntermediate, name, "intermediate_size");
    require(head_dim() % 2 == 0, name("heads"),
            "the head size channels / heads = " + std::to_string(head_dim()) +
                " must be even for rotary embeddings");
    require(norm_eps > 0.0f && norm_eps <= 1.0f, name("norm_eps"),
            "expected a number in (0, 1], got " + std::to_string(norm_eps));
    require(rope.theta > 0.0 && std::isfinite(rope.theta), name("rope_theta"),
            "expected a positive number");
    if (rope.llama3) {
      require(rope.factor > 0.0 && std::isfinite(rope.factor), name("rope_scaling.factor"),
              "expected a positive number");
      require(rope.low_freq_factor > 0.0 && rope.high_freq_factor > rope.low_freq_factor &&
                  std::isfinite(rope.high_freq_factor),
              name("rope_scaling.high_freq_factor"),
              "expected high_freq_factor > low_freq_factor > 0");
      require(rope.original_max_position >= 1.0 && std::isfinite(rope.original_max_position),
              name("rope_scaling.original_max_position_embeddings"), "expected a positive number");
    }
  }
  const auto n = param_count();
  require(n && *n <= kMaxParams, name("layers") + "/" + name("channels"),
          "the model would have " + (n ? std::to_string(*n) : std::string("over 2^64")) +
              " parameters (" + describe() + "), above the limit of " + std::to_string(kMaxParams));
}

std::optional<std::size_t> ModelConfig::param_count() const {
  const auto s = tensor_sizes(*this);
  if (!s) return std::nullopt;
  std::size_t total = 0;
  for (const std::size_t x : *s) {
    if (x > SIZE_MAX - total) return std::nullopt;
    total += x;
  }
  return total;
}

std::optional<std::size_t> activation_elements(const ModelConfig& c, std::size_t B, std::size_t T) {
  const std::size_t C = c.channels, L = c.num_layers, NH = c.num_heads, Vp = c.padded_vocab_size;
  const auto N = checked_mul({B, T});
  if (!N) return std::nullopt;
  // Per layer: 16 C for GPT-2 (qkv 3C, MLP 4C twice); wider qkv or MLP add
  // their excess over those.
  const std::size_t q = std::size_t(std::max(c.qkv_width(), 3 * c.channels)),
                    f = std::size_t(std::max(c.fc_width(), 4 * c.channels)),
                    h = std::size_t(std::max(c.hidden(), 4 * c.channels));
  const auto per = checked_add({checked_mul({9, C}), q, f, h});
  if (!per) return std::nullopt;
  return checked_add({checked_mul({L, *per, *N}), checked_mul({L, *N, NH, T}),
                      checked_mul({*N, checked_add({C, Vp}).value_or(0)})});
}

void validate_micro_batch(const ModelConfig& c, long long B, long long T, const FieldNamer& name) {
  in_range(B, 1, static_cast<long long>(kMaxBatchTokens), name, "batch_size");
  require(T >= 1 && T <= c.max_seq_len, name("seq_len"),
          "expected 1.." + std::to_string(c.max_seq_len) +
              " (the model's max sequence length), got " + std::to_string(T));
  require(std::size_t(B) * std::size_t(T) <= kMaxBatchTokens, name("batch_size"),
          std::to_string(B) + " x " + std::to_string(T) +
              " tokens per micro-batch exceeds the limit of " + std::to_string(kMaxBatchTokens));
  const auto a = activation_elements(c, std::size_t(B), std::size_t(T));
  require(a && *a <= kMaxActivations, name("batch_size"),
          "a micro-batch of " + std::to_string(B) + " x " + std::to_string(T) + " would hold " +
              (a ? std::to_string(*a) : std::string("over 2^64")) + " activation elements for " +
              c.describe() + ", above the limit of " + std::to_string(kMaxActivations));
}

std::string ModelConfig::describe() const {
  std::ostringstream s;
  if (llama()) s << "llama ";
  s << "L=" << num_layers << " NH=" << num_heads;
  if (llama()) s << " NKV=" << kv_heads() << " I=" << hidden();
  s << " C=" << channels << " V=" << vocab_size << " Vp=" << padded_vocab_size
    << " maxT=" << max_seq_len;
  if (llama() && !tied_head) s << " untied";
  return s.str();
}

int default_padded_vocab(int vocab) {
  if (vocab <= 0 || vocab > kMaxVocab) return vocab;
  return (vocab + 127) / 128 * 128;
}

bool model_preset(const std::string& name, ModelConfig& out) {
  struct Shape {
    const char* name;
    int L, C, NH;
  };
  static constexpr Shape kShapes[] = {{"124M", 12, 768, 12},
                                      {"350M", 24, 1024, 16},
                                      {"774M", 36, 1280, 20},
                                      {"1.5B", 48, 1600, 25}};
  for (const Shape& s : kShapes) {
    if (name != s.name) continue;
    out = ModelConfig{1024, 50257, 50304, s.L, s.NH, s.C};
    return true;
  }
  ModelConfig c;
  c.family = Family::kLlama;
  c.norm_eps = 1e-5f;
  c.tied_head = true;
  if (name == "llama-135M") {
    c.max_seq_len = 2048;
    c.vocab_size = c.padded_vocab_size = 49152;
    c.num_layers = 30;
    c.channels = 576;
    c.num_heads = 9;
    c.num_kv_heads = 3;
    c.intermediate_size = 1536;
    c.rope.theta = 10000.0;
  } else if (name == "llama-1B") {
    c.max_seq_len = 131072;
    c.vocab_size = c.padded_vocab_size = 128256;
    c.num_layers = 16;
    c.channels = 2048;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.intermediate_size = 8192;
    c.rope.theta = 500000.0;
    c.rope.llama3 = true;
    c.rope.factor = 32.0;
    c.rope.low_freq_factor = 1.0;
    c.rope.high_freq_factor = 4.0;
    c.rope.original_max_position = 8192.0;
  } else {
    return false;
  }
  out = c;
  return true;
}

ParamLayout::ParamLayout(const ModelConfig& c) {
  // tensor_sizes bounds every product; param_count every sum below.
  const auto s = tensor_sizes(c);
  if (!s || !c.param_count())
    throw InputError("model shape " + c.describe() +
                     ": sizes must be positive and the parameter count must fit in 64 bits");
  sizes = *s;
  std::size_t off = 0;
  for (int k = 0; k < kNumParamTensors; ++k) {
    offsets[k] = off;
    off += sizes[k];
  }
  total = off;
}

bool ParamLayout::decays(int k) {
  return k == kWte || k == kWpe || k == kQkvw || k == kAttprojw || k == kFcw || k == kFcprojw ||
         k == kLmHead;
}

bool ParamLayout::is_layer_tensor(int k) {
  return k != kWte && k != kWpe && k != kLnfw && k != kLnfb && k != kLmHead;
}

} // namespace myelin
