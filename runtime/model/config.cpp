#include "runtime/model/config.h"

#include <sstream>

#include "runtime/util/checked.h"
#include "runtime/util/error.h"

namespace myelin {

const std::array<const char*, kNumParamTensors> kParamTensorNames = {
    "wte",  "wpe",  "ln1w", "ln1b", "qkvw",    "qkvb",    "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw",     "lnfb"};

FieldNamer flag_names() {
  return [](std::string_view key) {
    std::string f = "--" + std::string(key);
    for (char& ch : f)
      if (ch == '_') ch = '-';
    return f;
  };
}

FieldNamer key_names(std::string prefix) {
  return [prefix = std::move(prefix)](std::string_view key) { return prefix + std::string(key); };
}

namespace {
void in_range(long long v, long long lo, long long hi, const FieldNamer& name, const char* key) {
  require(v >= lo && v <= hi, name(key),
          "expected " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
              std::to_string(v));
}
} // namespace

void GPT2Config::validate(const FieldNamer& name) const {
  in_range(channels, 1, kMaxChannels, name, "channels");
  in_range(num_heads, 1, channels, name, "heads");
  require(channels % num_heads == 0, name("channels"),
          std::to_string(channels) + " is not a multiple of heads (" + std::to_string(num_heads) +
              ")");
  in_range(num_layers, 1, kMaxLayers, name, "layers");
  in_range(max_seq_len, 1, kMaxSeqLen, name, "max_seq_len");
  in_range(vocab_size, 1, kMaxVocab, name, "vocab");
  in_range(padded_vocab_size, vocab_size, kMaxVocab, name, "padded_vocab");
  const auto n = param_count();
  require(n && *n <= kMaxParams, name("layers") + "/" + name("channels"),
          "the model would have " + (n ? std::to_string(*n) : std::string("over 2^64")) +
              " parameters (" + describe() + "), above the limit of " + std::to_string(kMaxParams));
}

std::optional<std::size_t> GPT2Config::param_count() const {
  if (max_seq_len <= 0 || padded_vocab_size <= 0 || num_layers <= 0 || channels <= 0)
    return std::nullopt;
  const std::size_t Vp = padded_vocab_size, C = channels, L = num_layers, T = max_seq_len;
  // wte, wpe, lnfw/b; per layer 12 C^2 weights and 13 C (ln1w/b, qkvb, attprojb, ln2w/b, fcb,
  // fcprojb).
  return checked_add({checked_mul({Vp, C}), checked_mul({T, C}), checked_mul({2, C}),
                      checked_mul({L, 12, C, C}), checked_mul({L, 13, C})});
}

std::optional<std::size_t> activation_elements(const GPT2Config& c, std::size_t B, std::size_t T) {
  const std::size_t C = c.channels, L = c.num_layers, NH = c.num_heads, Vp = c.padded_vocab_size;
  const auto N = checked_mul({B, T});
  if (!N) return std::nullopt;
  return checked_add({checked_mul({L, 16, *N, C}), checked_mul({L, *N, NH, T}),
                      checked_mul({*N, checked_add({C, Vp}).value_or(0)})});
}

void validate_micro_batch(const GPT2Config& c, long long B, long long T, const FieldNamer& name) {
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

std::string GPT2Config::describe() const {
  std::ostringstream s;
  s << "L=" << num_layers << " NH=" << num_heads << " C=" << channels << " V=" << vocab_size
    << " Vp=" << padded_vocab_size << " maxT=" << max_seq_len;
  return s.str();
}

int default_padded_vocab(int vocab) {
  if (vocab <= 0 || vocab > kMaxVocab) return vocab;
  return (vocab + 127) / 128 * 128;
}

bool gpt2_preset(const std::string& name, GPT2Config& out) {
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
    out = GPT2Config{1024, 50257, 50304, s.L, s.NH, s.C};
    return true;
  }
  return false;
}

ParamLayout::ParamLayout(const GPT2Config& c) {
  // param_count bounds every product and sum below.
  const auto n = c.param_count();
  if (!n)
    throw InputError("model shape " + c.describe() +
                     ": sizes must be positive and the parameter count must fit in 64 bits");
  const std::size_t Vp = c.padded_vocab_size, C = c.channels, L = c.num_layers, T = c.max_seq_len;
  sizes = {Vp * C, T * C, L * C,         L * C,     L * 3 * C * C, L * 3 * C, L * C * C, L * C,
           L * C,  L * C, L * 4 * C * C, L * 4 * C, L * C * 4 * C, L * C,     C,         C};
  std::size_t off = 0;
  for (int k = 0; k < kNumParamTensors; ++k) {
    offsets[k] = off;
    off += sizes[k];
  }
  total = off;
}

bool ParamLayout::decays(int k) {
  return k == kWte || k == kWpe || k == kQkvw || k == kAttprojw || k == kFcw || k == kFcprojw;
}

bool ParamLayout::is_layer_tensor(int k) {
  return k != kWte && k != kWpe && k != kLnfw && k != kLnfb;
}

} // namespace myelin
