#include "runtime/io/model_file.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "runtime/io/file_util.h"
#include "runtime/io/finite_check.h"
#include "runtime/util/error.h"

namespace myelin {

namespace {
using Header = std::array<int, 256>;
constexpr int kFirstReserved = 23; // Llama header words from here on are zero

void put_double(Header& h, int at, double x) {
  std::uint64_t bits = 0;
  std::memcpy(&bits, &x, 8);
  h[at] = static_cast<int>(static_cast<std::uint32_t>(bits));
  h[at + 1] = static_cast<int>(static_cast<std::uint32_t>(bits >> 32));
}
double get_double(const Header& h, int at) {
  const std::uint64_t bits = std::uint64_t(static_cast<std::uint32_t>(h[at])) |
                             (std::uint64_t(static_cast<std::uint32_t>(h[at + 1])) << 32);
  double x = 0;
  std::memcpy(&x, &bits, 8);
  return x;
}

// The Llama fields of the header into cfg (validated by the caller).
void read_llama_header(const std::string& path, const Header& h, ModelConfig& cfg) {
  const std::string bad = path + ": bad model header: ";
  cfg.family = Family::kLlama;
  cfg.num_kv_heads = h[8];
  cfg.intermediate_size = h[9];
  if (h[8] < 1)
    throw InputError(bad + "kv_heads: expected a positive count, got " + std::to_string(h[8]));
  if (h[9] < 1)
    throw InputError(bad + "intermediate_size: expected a positive size, got " +
                     std::to_string(h[9]));
  if (h[10] != 0 && h[10] != 1)
    throw InputError(bad + "tied_head: expected 0 or 1, got " + std::to_string(h[10]));
  if (h[11] != 0 && h[11] != 1)
    throw InputError(bad + "rope_scaling: expected 0 or 1, got " + std::to_string(h[11]));
  cfg.tied_head = h[10] == 1;
  cfg.rope.llama3 = h[11] == 1;
  std::memcpy(&cfg.norm_eps, &h[12], 4);
  cfg.rope.theta = get_double(h, 13);
  cfg.rope.factor = get_double(h, 15);
  cfg.rope.low_freq_factor = get_double(h, 17);
  cfg.rope.high_freq_factor = get_double(h, 19);
  cfg.rope.original_max_position = get_double(h, 21);
  for (int i = kFirstReserved; i < 256; ++i)
    if (h[i] != 0)
      throw InputError(bad + "reserved word " + std::to_string(i) + " is " + std::to_string(h[i]) +
                       ", expected 0");
}

Header make_header(const ModelConfig& cfg, int version) {
  Header h{};
  h[0] = cfg.llama() ? kLlamaModelMagic : kModelMagic;
  h[1] = version;
  h[2] = cfg.max_seq_len;
  h[3] = cfg.vocab_size;
  h[4] = cfg.num_layers;
  h[5] = cfg.num_heads;
  h[6] = cfg.channels;
  h[7] = cfg.padded_vocab_size;
  if (cfg.llama()) {
    h[8] = cfg.kv_heads();
    h[9] = cfg.hidden();
    h[10] = cfg.tied_head ? 1 : 0;
    h[11] = cfg.rope.llama3 ? 1 : 0;
    std::memcpy(&h[12], &cfg.norm_eps, 4);
    put_double(h, 13, cfg.rope.theta);
    put_double(h, 15, cfg.rope.factor);
    put_double(h, 17, cfg.rope.low_freq_factor);
    put_double(h, 19, cfg.rope.high_freq_factor);
    put_double(h, 21, cfg.rope.original_max_position);
  }
  return h;
}

// Reads and checks the header and the file size; returns the header.
Header checked_header(const std::string& path, ModelConfig& cfg) {
  const std::size_t size = file_size_or_throw(path);
  Header h{};
  if (size < sizeof(h))
    throw InputError(path + ": truncated model file (shorter than the 1024-byte header)");
  read_exact(path, 0, h.data(), sizeof(h));
  if (h[0] != kModelMagic && h[0] != kLlamaModelMagic)
    throw InputError(path + ": not a model file (magic " + std::to_string(h[0]) + ", expected " +
                     std::to_string(kModelMagic) + " or " + std::to_string(kLlamaModelMagic) + ")");
  if (h[1] != 3 && h[1] != 5)
    throw InputError(path + ": unsupported model version " + std::to_string(h[1]) +
                     " (expected 3 = fp32 or 5 = bf16)");
  cfg.max_seq_len = h[2];
  cfg.vocab_size = h[3];
  cfg.num_layers = h[4];
  cfg.num_heads = h[5];
  cfg.channels = h[6];
  cfg.padded_vocab_size = h[7];
  if (h[0] == kLlamaModelMagic) read_llama_header(path, h, cfg);
  cfg.validate(key_names(path + ": bad model header: "));
  // validate bounds the parameter count (kMaxParams), so this cannot overflow.
  const std::size_t elem = h[1] == 3 ? 4 : 2;
  const std::size_t want = sizeof(h) + *cfg.param_count() * elem;
  if (size < want)
    throw InputError(path + ": truncated model file (" + std::to_string(size) +
                     " bytes, expected " + std::to_string(want) + " for " + cfg.describe() + ")");
  if (size > want)
    throw InputError(path + ": model file has " + std::to_string(size - want) +
                     " unexpected trailing bytes (expected " + std::to_string(want) + ")");
  return h;
}
} // namespace

ModelConfig load_model_config(const std::string& path) {
  ModelConfig cfg;
  checked_header(path, cfg);
  return cfg;
}

ModelFile load_model(const std::string& path) {
  ModelFile m;
  const Header h = checked_header(path, m.config);
  m.version = h[1];
  const ParamLayout lay(m.config);
  m.params.resize(lay.total);
  if (m.version == 3) {
    read_exact(path, sizeof(h), m.params.data(), lay.total * 4);
  } else {
    std::vector<std::uint16_t> raw(lay.total);
    read_exact(path, sizeof(h), raw.data(), lay.total * 2);
    for (std::size_t i = 0; i < lay.total; ++i) m.params[i] = bf16_to_float(raw[i]);
  }
  require_finite(path, "weight", m.config, m.params);
  return m;
}

void save_model(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params,
                int version, Durability durability) {
  if (version != 3 && version != 5) throw std::logic_error("save_model: version must be 3 or 5");
  const ParamLayout lay(cfg);
  if (params.size() != lay.total) throw std::logic_error("save_model: parameter count mismatch");
  const Header h = make_header(cfg, version);
  write_atomic(
      path,
      [&](const ByteSink& out) {
        out(h.data(), sizeof(h));
        if (version == 3) {
          out(params.data(), params.size() * 4);
        } else {
          std::vector<std::uint16_t> raw(params.size());
          for (std::size_t i = 0; i < params.size(); ++i) raw[i] = float_to_bf16(params[i]);
          out(raw.data(), raw.size() * 2);
        }
      },
      durability);
}

} // namespace myelin
