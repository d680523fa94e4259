#include "runtime/model/config.h"

#include <sstream>
#include <stdexcept>

namespace myelin {

const std::array<const char*, kNumParamTensors> kParamTensorNames = {
    "wte",  "wpe",  "ln1w", "ln1b", "qkvw",    "qkvb",    "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw",     "lnfb"};

void GPT2Config::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
  };
  need(max_seq_len > 0 && max_seq_len <= (1 << 20), "max sequence length must be in 1..1048576");
  need(vocab_size > 0, "vocab size must be positive");
  need(padded_vocab_size >= vocab_size, "padded vocab size must be >= vocab size");
  need(num_layers > 0 && num_layers <= 4096, "number of layers must be in 1..4096");
  need(num_heads > 0, "number of heads must be positive");
  need(channels > 0 && channels % num_heads == 0, "channels must be a positive multiple of heads");
}

std::string GPT2Config::describe() const {
  std::ostringstream s;
  s << "L=" << num_layers << " NH=" << num_heads << " C=" << channels << " V=" << vocab_size
    << " Vp=" << padded_vocab_size << " maxT=" << max_seq_len;
  return s.str();
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
