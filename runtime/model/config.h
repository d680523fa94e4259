// The model configuration (GPT-2 family or Llama family, one model with two
// block variants) and the layout of its single parameter buffer: llm.c's
// parameter order (wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w,
// ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb) followed by lm_head. A tensor
// a family does not have has size 0: GPT-2 has no lm_head (tied to wte), so its
// buffer is exactly llm.c's; Llama has no wpe and no biases, and lm_head only
// when the head is untied.
//
// The families (ModelConfig::family):
//   GPT-2  LayerNorm (eps 1e-5, with bias), learned positions (wpe), multi-head
//          attention, GeLU MLP of 4C, biases everywhere, head tied to wte.
//   Llama  RMSNorm (norm_eps, no bias), rotary positions (rope: theta, Llama 3
//          scaling) in Hugging Face's rotate-half convention, grouped-query
//          attention (kv_heads), SwiGLU MLP of intermediate_size, no biases,
//          head tied or not (tied_head).
// Per-layer tensors for Llama, D = C / NH, I = intermediate_size:
//   qkvw [(NH + 2 NKV) D, C]  rows q_proj (NH D) | k_proj (NKV D) | v_proj (NKV D)
//   attprojw [C, NH D]         o_proj
//   fcw [2 I, C]               rows gate_proj (I) | up_proj (I)
//   fcprojw [C, I]             down_proj
//   ln1w, ln2w [C]             input_layernorm, post_attention_layernorm
//
// One size check for every path that builds a model (`myelin train` flags, a
// model file's header, a Hugging Face config.json, a pool job, `--memory-plan`,
// `myelin bench`):
// ModelConfig::validate and validate_micro_batch throw InputError naming the
// field as its source spells it. The bounds (inclusive):
//   channels C          1..65536
//   heads NH            1..C, and NH divides C
//   layers L            1..4096
//   max_seq_len maxT    1..1048576 (2^20)
//   vocab V             1..1048576 (2^20)
//   padded_vocab Vp     V..1048576
//   kv_heads NKV        1..NH, and NKV divides NH (GPT-2: NKV = NH)
//   intermediate I      1..262144 (GPT-2: I = 4C)
//   Llama head size     C / NH even (RoPE pairs channels)
//   norm_eps            (0, 1]; rope theta > 0; Llama 3 scaling: factor > 0,
//                       high_freq_factor > low_freq_factor > 0, original
//                       positions >= 1
//   parameters          at most 2^36 (about 68.7 billion, 256 GiB in fp32)
//   micro-batch B x T   T <= maxT, B*T <= 2^24 tokens, and at most 2^40
//                       activation elements (activation_elements below)
// Within them every element count, offset and byte count of the model, its
// optimizer state and its activations fits in 64 bits; the arithmetic is
// checked anyway (runtime/util/checked.h).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "kernels/ops.h"

namespace myelin {

inline constexpr int kMaxChannels = 1 << 16;
inline constexpr int kMaxLayers = 4096;
inline constexpr int kMaxSeqLen = 1 << 20;
inline constexpr int kMaxVocab = 1 << 20;
inline constexpr int kMaxIntermediate = 1 << 18;
inline constexpr std::size_t kMaxParams = std::size_t(1) << 36;
inline constexpr std::size_t kMaxBatchTokens = std::size_t(1) << 24;
inline constexpr std::size_t kMaxActivations = std::size_t(1) << 40;

// How an error names a field, given its key ("padded_vocab", "batch_size"):
// flag_names() gives the command-line flag ("--padded-vocab"), key_names(p)
// the key after a prefix ("job.model.padded_vocab", "m.bin: header vocab").
using FieldNamer = std::function<std::string(std::string_view key)>;
FieldNamer flag_names();
FieldNamer key_names(std::string prefix);

enum class Family : std::uint8_t { kGpt2 = 0, kLlama = 1 };
// "gpt2" or "llama" (a flag's or a job's value); InputError naming `where`
// otherwise.
Family parse_family(const std::string& name, const std::string& where);
const char* family_name(Family f);

struct ModelConfig {
  int max_seq_len = 0;       // maxT
  int vocab_size = 0;        // V
  int padded_vocab_size = 0; // Vp >= V (rows of wte; padding rows never used as targets)
  int num_layers = 0;        // L
  int num_heads = 0;         // NH
  int channels = 0;          // C
  Family family = Family::kGpt2;
  // Llama family only (GPT-2 requires the defaults):
  int num_kv_heads = 0;      // NKV; 0 = NH
  int intermediate_size = 0; // I; 0 = 4C
  bool tied_head = true;     // the head reuses wte (GPT-2: always)
  float norm_eps = 1e-5f;    // RMSNorm epsilon
  cpu::RopeParams rope{};

  bool llama() const { return family == Family::kLlama; }
  int head_dim() const { return channels / num_heads; }
  int kv_heads() const { return num_kv_heads > 0 ? num_kv_heads : num_heads; }
  int hidden() const { return intermediate_size > 0 ? intermediate_size : 4 * channels; }
  // Width of the qkv activation, (NH + 2 NKV) D, and of the first MLP matmul's
  // output: I for GPT-2, 2I (gate | up) for Llama.
  int qkv_width() const { return (num_heads + 2 * kv_heads()) * head_dim(); }
  int fc_width() const { return llama() ? 2 * hidden() : hidden(); }

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
// B*T*(C + Vp) for the final LayerNorm and the logits (for Llama the MLP and
// qkv terms grow with I and NKV: the estimate uses the wider of the two
// families). nullopt on overflow.
std::optional<std::size_t> activation_elements(const ModelConfig& c, std::size_t B, std::size_t T);

// Checks a micro-batch shape against a validated config: B >= 1,
// 1 <= T <= maxT, B*T <= kMaxBatchTokens and activation_elements <=
// kMaxActivations. Names the fields "batch_size" and "seq_len" through `name`.
void validate_micro_batch(const ModelConfig& c, long long B, long long T, const FieldNamer& name);

// The padded vocabulary llm.c uses for a vocabulary: the next multiple of 128
// (the vocabulary itself where that is out of bounds; validate reports it).
int default_padded_vocab(int vocab);

// Named shapes. GPT-2 family (maxT 1024, V 50257, Vp 50304): "124M" (L12 C768
// NH12), "350M" (L24 C1024 NH16), "774M" (L36 C1280 NH20), "1.5B" (L48 C1600
// NH25). Llama family (RMSNorm eps 1e-5, tied head): "llama-135M" (SmolLM-135M's
// shape: L30 C576 NH9 NKV3 I1536, V 49152, maxT 2048, rope theta 10000) and
// "llama-1B" (Llama 3.2 1B's shape: L16 C2048 NH32 NKV8 I8192, V 128256,
// maxT 131072, rope theta 500000 with Llama 3 scaling factor 32 from 8192
// positions, low/high frequency factors 1/4). Returns false for any other name.
bool model_preset(const std::string& name, ModelConfig& out);
inline constexpr const char* kPresetNames = "124M, 350M, 774M, 1.5B, llama-135M, llama-1B";

constexpr int kNumParamTensors = 17;
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
  kLnfb,
  kLmHead
};
extern const std::array<const char*, kNumParamTensors> kParamTensorNames;

// Sizes (elements) and offsets of the 17 tensors inside the flat buffer (a
// tensor the family lacks has size 0).
// Throws InputError when the config's sizes are not positive or overflow
// (validate the config first for a message naming the field).
struct ParamLayout {
  std::array<std::size_t, kNumParamTensors> sizes{};
  std::array<std::size_t, kNumParamTensors> offsets{};
  std::size_t total = 0;
  explicit ParamLayout(const ModelConfig& c);
  ParamLayout() = default;
  // Elements of tensor k that belong to layer l (per-layer tensors only).
  std::size_t per_layer(int k, int num_layers) const { return sizes[k] / num_layers; }
  // True for tensors that get weight decay (matrices and embeddings).
  static bool decays(int k);
  // True for tensors stacked per layer (all but wte, wpe, lnfw, lnfb, lm_head).
  static bool is_layer_tensor(int k);
};

} // namespace myelin
