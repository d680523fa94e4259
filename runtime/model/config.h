// GPT-2 model configuration and the layout of its single parameter buffer, in
// llm.c's parameter order (wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw,
// attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb).
//
// One size check for every path that builds a model (`myelin train` flags, an
// llm.c model file's header, a pool job, `--memory-plan`, `myelin bench`):
// GPT2Config::validate and validate_micro_batch throw InputError naming the
// field as its source spells it. The bounds (inclusive):
//   channels C          1..65536
//   heads NH            1..C, and NH divides C
//   layers L            1..4096
//   max_seq_len maxT    1..1048576 (2^20)
//   vocab V             1..1048576 (2^20)
//   padded_vocab Vp     V..1048576
//   parameters          at most 2^36 (about 68.7 billion, 256 GiB in fp32)
//   micro-batch B x T   T <= maxT, B*T <= 2^24 tokens, and at most 2^40
//                       activation elements (activation_elements below)
// Within them every element count, offset and byte count of the model, its
// optimizer state and its activations fits in 64 bits; the arithmetic is
// checked anyway (runtime/util/checked.h).
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace myelin {

inline constexpr int kMaxChannels = 1 << 16;
inline constexpr int kMaxLayers = 4096;
inline constexpr int kMaxSeqLen = 1 << 20;
inline constexpr int kMaxVocab = 1 << 20;
inline constexpr std::size_t kMaxParams = std::size_t(1) << 36;
inline constexpr std::size_t kMaxBatchTokens = std::size_t(1) << 24;
inline constexpr std::size_t kMaxActivations = std::size_t(1) << 40;

// How an error names a field, given its key ("padded_vocab", "batch_size"):
// flag_names() gives the command-line flag ("--padded-vocab"), key_names(p)
// the key after a prefix ("job.model.padded_vocab", "m.bin: header vocab").
using FieldNamer = std::function<std::string(std::string_view key)>;
FieldNamer flag_names();
FieldNamer key_names(std::string prefix);

struct GPT2Config {
  int max_seq_len = 0;       // maxT
  int vocab_size = 0;        // V
  int padded_vocab_size = 0; // Vp >= V (rows of wte; padding rows never used as targets)
  int num_layers = 0;        // L
  int num_heads = 0;         // NH
  int channels = 0;          // C

  // Throws InputError naming the field (through `name`) when a field is
  // outside the bounds above or the parameter count exceeds kMaxParams.
  void validate(const FieldNamer& name = key_names("")) const;
  // Elements of the parameter buffer; nullopt when a field is not positive or
  // the count overflows.
  std::optional<std::size_t> param_count() const;
  std::string describe() const;
};

// An upper estimate of the activation elements one micro-batch of B x T holds
// in either engine: per layer 16 x B*T*C (LayerNorms, qkv, attention output,
// MLP, residuals) plus the CPU engine's B*NH*T*T attention matrix, plus
// B*T*(C + Vp) for the final LayerNorm and the logits. nullopt on overflow.
std::optional<std::size_t> activation_elements(const GPT2Config& c, std::size_t B, std::size_t T);

// Checks a micro-batch shape against a validated config: B >= 1,
// 1 <= T <= maxT, B*T <= kMaxBatchTokens and activation_elements <=
// kMaxActivations. Names the fields "batch_size" and "seq_len" through `name`.
void validate_micro_batch(const GPT2Config& c, long long B, long long T, const FieldNamer& name);

// The padded vocabulary llm.c uses for a vocabulary: the next multiple of 128
// (the vocabulary itself where that is out of bounds; validate reports it).
int default_padded_vocab(int vocab);

// The GPT-2 family's shapes (maxT 1024, V 50257, Vp 50304): "124M" (L12 C768
// NH12), "350M" (L24 C1024 NH16), "774M" (L36 C1280 NH20), "1.5B" (L48 C1600
// NH25). Returns false for any other name.
bool gpt2_preset(const std::string& name, GPT2Config& out);
inline constexpr const char* kGpt2PresetNames = "124M, 350M, 774M, 1.5B";

constexpr int kNumParamTensors = 16;
enum ParamTensor : int {
  kWte = 0,
  kWpe,
  kLn1w,
  kLn1b,
  kQkvw,
  kQkvb,
  kAttprojw,
  kAttprojb,
  kLn2w,
  kLn2b,
  kFcw,
  kFcb,
  kFcprojw,
  kFcprojb,
  kLnfw,
  kLnfb
};
extern const std::array<const char*, kNumParamTensors> kParamTensorNames;

// Sizes (elements) and offsets of the 16 tensors inside the flat buffer.
// Throws InputError when the config's sizes are not positive or overflow
// (validate the config first for a message naming the field).
struct ParamLayout {
  std::array<std::size_t, kNumParamTensors> sizes{};
  std::array<std::size_t, kNumParamTensors> offsets{};
  std::size_t total = 0;
  explicit ParamLayout(const GPT2Config& c);
  ParamLayout() = default;
  // Elements of tensor k that belong to layer l (per-layer tensors only).
  std::size_t per_layer(int k, int num_layers) const { return sizes[k] / num_layers; }
  // True for tensors that get weight decay (matrices and embeddings).
  static bool decays(int k);
  // True for tensors stacked per layer (all but wte, wpe, lnfw, lnfb).
  static bool is_layer_tensor(int k);
};

} // namespace myelin
