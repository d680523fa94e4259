#include "runtime/io/hf_gpt2.h"

#include <cstring>
#include <filesystem>

#include "runtime/io/finite_check.h"
#include "runtime/io/hf_config.h"
#include "runtime/util/error.h"

namespace myelin {

namespace fs = std::filesystem;

namespace {
// One GPT-2 tensor: its Hugging Face name (with "{l}" for the layer), whether
// it is a Conv1D weight stored [in, out], and its Hugging Face shape.
struct HfTensor {
  int k; // ParamTensor
  const char* name;
  bool conv1d;
};
constexpr HfTensor kTensors[] = {{kWte, "wte.weight", false},
                                 {kWpe, "wpe.weight", false},
                                 {kLn1w, "h.{l}.ln_1.weight", false},
                                 {kLn1b, "h.{l}.ln_1.bias", false},
                                 {kQkvw, "h.{l}.attn.c_attn.weight", true},
                                 {kQkvb, "h.{l}.attn.c_attn.bias", false},
                                 {kAttprojw, "h.{l}.attn.c_proj.weight", true},
                                 {kAttprojb, "h.{l}.attn.c_proj.bias", false},
                                 {kLn2w, "h.{l}.ln_2.weight", false},
                                 {kLn2b, "h.{l}.ln_2.bias", false},
                                 {kFcw, "h.{l}.mlp.c_fc.weight", true},
                                 {kFcb, "h.{l}.mlp.c_fc.bias", false},
                                 {kFcprojw, "h.{l}.mlp.c_proj.weight", true},
                                 {kFcprojb, "h.{l}.mlp.c_proj.bias", false},
                                 {kLnfw, "ln_f.weight", false},
                                 {kLnfb, "ln_f.bias", false}};

constexpr const char* kPrefix = "transformer.";

std::string layer_name(const HfTensor& t, int l) {
  std::string s = t.name;
  const auto at = s.find("{l}");
  if (at != std::string::npos) s.replace(at, 3, std::to_string(l));
  return s;
}

// The Hugging Face shape of tensor k (one layer's slice for layer tensors).
std::vector<std::size_t> hf_shape(int k, const ModelConfig& c) {
  const std::size_t C = c.channels, V = c.vocab_size, T = c.max_seq_len;
  switch (k) {
  case kWte:
    return {V, C};
  case kWpe:
    return {T, C};
  case kQkvw:
    return {C, 3 * C};
  case kQkvb:
    return {3 * C};
  case kAttprojw:
    return {C, C};
  case kFcw:
    return {C, 4 * C};
  case kFcb:
    return {4 * C};
  case kFcprojw:
    return {4 * C, C};
  default:
    return {C}; // LayerNorm weights and biases, attprojb, fcprojb
  }
}

std::string shape_text(const std::vector<std::size_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

// src is [rows, cols]; dst gets [cols, rows].
void transpose(const float* src, float* dst, std::size_t rows, std::size_t cols) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

bool is_mask_buffer(const std::string& name) {
  return name.starts_with("h.") &&
         (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"));
}

std::string config_path_of(const std::string& dir) {
  return (fs::path(dir) / "config.json").string();
}
} // namespace

ModelConfig load_hf_gpt2_config(const std::string& path) {
  std::error_code ec;
  const std::string dir = fs::is_directory(path, ec) ? path : fs::path(path).parent_path().string();
  const std::string cp = config_path_of(dir.empty() ? "." : dir);
  return require_gpt2(read_hf_config(cp), cp);
}

ModelFile load_hf_gpt2(const std::string& path) {
  const SafetensorsCheckpoint ck(path);
  const std::string cp = config_path_of(ck.dir());
  ModelFile m;
  m.config = require_gpt2(read_hf_config(cp), cp);
  m.version = 3;
  const ModelConfig& cfg = m.config;
  // Names without the "transformer." prefix; a name given both ways is refused.
  std::map<std::string, SafetensorsCheckpoint::Entry> by_name;
  for (const auto& [name, e] : ck.tensors()) {
    const std::string bare = name.starts_with(kPrefix) ? name.substr(std::strlen(kPrefix)) : name;
    if (!by_name.emplace(bare, e).second)
      throw InputError(e.file->path() + ": tensor " + name + " is given both with and without " +
                       kPrefix);
  }
  const auto where = [](const SafetensorsCheckpoint::Entry& e) {
    return e.file->path() + ": tensor " + e.tensor->name;
  };
  const auto take = [&](const std::string& name, const std::vector<std::size_t>& shape) {
    const auto it = by_name.find(name);
    if (it == by_name.end())
      throw InputError(ck.source() + ": tensor " + name + " is missing (expected " +
                       shape_text(shape) + " for " + cp + ": " + cfg.describe() + ")");
    const auto e = it->second;
    if (e.tensor->shape != shape)
      throw InputError(where(e) + ": shape " + shape_text(e.tensor->shape) + ", expected " +
                       shape_text(shape) + " for " + cp + ": " + cfg.describe());
    by_name.erase(it);
    return e;
  };
  const ParamLayout lay(cfg);
  m.params.assign(lay.total, 0.0f);
  std::vector<float> tmp;
  for (const HfTensor& t : kTensors) {
    const bool per_layer = ParamLayout::is_layer_tensor(t.k);
    const std::vector<std::size_t> shape = hf_shape(t.k, cfg);
    for (int l = 0; l < (per_layer ? cfg.num_layers : 1); ++l) {
      const auto e = take(layer_name(t, l), shape);
      const std::size_t n = e.tensor->elements;
      float* dst = m.params.data() + lay.offsets[t.k] + (per_layer ? std::size_t(l) * n : 0);
      if (t.conv1d) {
        tmp.resize(n);
        ck.to_float(e, tmp);
        transpose(tmp.data(), dst, shape[0], shape[1]);
      } else {
        ck.to_float(e, {dst, n}); // wte: the first V rows; the padding rows stay zero
      }
    }
  }
  if (const auto it = by_name.find("lm_head.weight"); it != by_name.end()) {
    const auto e = take("lm_head.weight", hf_shape(kWte, cfg));
    tmp.resize(e.tensor->elements);
    ck.to_float(e, tmp);
    if (std::memcmp(tmp.data(), m.params.data() + lay.offsets[kWte], tmp.size() * 4) != 0)
      throw InputError(where(e) + ": differs from wte.weight (GPT-2's head is tied to wte)");
  }
  for (const auto& [name, e] : by_name)
    if (!is_mask_buffer(name))
      throw InputError(where(e) + ": not a GPT-2 tensor (expected GPT2LMHeadModel names)");
  require_finite(ck.source(), "weight", cfg, m.params);
  return m;
}

void save_hf_gpt2(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params,
                  StDtype dtype) {
  const ParamLayout lay(cfg);
  if (params.size() != lay.total) throw std::logic_error("save_hf_gpt2: parameter count mismatch");
  std::vector<StTensorOut> out;
  for (const HfTensor& t : kTensors) {
    const bool per_layer = ParamLayout::is_layer_tensor(t.k);
    const std::vector<std::size_t> shape = hf_shape(t.k, cfg);
    for (int l = 0; l < (per_layer ? cfg.num_layers : 1); ++l) {
      const std::size_t per = per_layer ? lay.per_layer(t.k, cfg.num_layers) : 0;
      const float* src = params.data() + lay.offsets[t.k] + std::size_t(l) * per;
      const bool conv1d = t.conv1d;
      out.push_back({kPrefix + layer_name(t, l), shape, [src, shape, conv1d](std::span<float> d) {
                       if (conv1d)
                         transpose(src, d.data(), shape[1], shape[0]); // [out, in] -> [in, out]
                       else
                         std::memcpy(d.data(), src, d.size() * 4); // wte: drops the padding rows
                     }});
    }
  }
  write_safetensors(path, out, dtype, {{"format", "pt"}});
  std::string dir = fs::path(path).parent_path().string();
  write_gpt2_config(config_path_of(dir.empty() ? "." : dir), cfg);
}

} // namespace myelin
