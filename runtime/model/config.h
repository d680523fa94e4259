// GPT-2 model configuration and the layout of its single parameter buffer, in
// llm.c's parameter order (wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw,
// attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb).
#pragma once

#include <array>
#include <cstddef>
#include <string>

namespace myelin {

struct GPT2Config {
  int max_seq_len = 0;       // maxT
  int vocab_size = 0;        // V
  int padded_vocab_size = 0; // Vp >= V (rows of wte; padding rows never used as targets)
  int num_layers = 0;        // L
  int num_heads = 0;         // NH
  int channels = 0;          // C

  // Throws std::invalid_argument naming the field on nonsense values.
  void validate() const;
  std::string describe() const;
};

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
