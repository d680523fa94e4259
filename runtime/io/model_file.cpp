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
// Reads and checks the header and the file size; returns the header.
std::array<int, 256> checked_header(const std::string& path, ModelConfig& cfg) {
  const std::size_t size = file_size_or_throw(path);
  std::array<int, 256> h{};
  if (size < sizeof(h))
    throw InputError(path + ": truncated model file (shorter than the 1024-byte header)");
  read_exact(path, 0, h.data(), sizeof(h));
  if (h[0] != kModelMagic)
    throw InputError(path + ": not a model file (magic " + std::to_string(h[0]) + ", expected " +
                     std::to_string(kModelMagic) + ")");
  if (h[1] != 3 && h[1] != 5)
    throw InputError(path + ": unsupported model version " + std::to_string(h[1]) +
                     " (expected 3 = fp32 or 5 = bf16)");
  cfg.max_seq_len = h[2];
  cfg.vocab_size = h[3];
  cfg.num_layers = h[4];
  cfg.num_heads = h[5];
  cfg.channels = h[6];
  cfg.padded_vocab_size = h[7];
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
  const std::array<int, 256> h = checked_header(path, m.config);
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
  if (cfg.llama())
    throw InputError(path + ": llm.c's model format holds the GPT-2 family only; save a Llama-"
                            "family model as .safetensors");
  const ParamLayout lay(cfg);
  if (params.size() != lay.total) throw std::logic_error("save_model: parameter count mismatch");
  std::array<int, 256> h{};
  h[0] = kModelMagic;
  h[1] = version;
  h[2] = cfg.max_seq_len;
  h[3] = cfg.vocab_size;
  h[4] = cfg.num_layers;
  h[5] = cfg.num_heads;
  h[6] = cfg.channels;
  h[7] = cfg.padded_vocab_size;
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
