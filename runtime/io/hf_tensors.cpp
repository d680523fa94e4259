#include "runtime/io/hf_tensors.h"

#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "runtime/io/hf_config.h"
#include "runtime/util/error.h"

namespace myelin {

namespace fs = std::filesystem;

namespace {
// src is [rows, cols]; dst gets [cols, rows].
void transpose(const float* src, float* dst, std::size_t rows, std::size_t cols) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

std::size_t elements_of(const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (const std::size_t d : shape) n *= d; // shapes come from a validated config
  return n;
}

SafetensorsCheckpoint::Entry take(const SafetensorsCheckpoint& ck, HfTensorMap& left,
                                  const std::string& name, const std::vector<std::size_t>& shape,
                                  const std::string& cfg_text) {
  const auto it = left.find(name);
  if (it == left.end())
    throw InputError(ck.source() + ": tensor " + name + " is missing (expected " +
                     shape_text(shape) + " for " + cfg_text + ")");
  const auto e = it->second;
  if (e.tensor->shape != shape)
    throw InputError(tensor_where(e) + ": shape " + shape_text(e.tensor->shape) + ", expected " +
                     shape_text(shape) + " for " + cfg_text);
  left.erase(it);
  return e;
}
} // namespace

std::string shape_text(const std::vector<std::size_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

std::string tensor_where(const SafetensorsCheckpoint::Entry& e) {
  return e.file->path() + ": tensor " + e.tensor->name;
}

std::string hf_dir_of(const std::string& path) {
  std::error_code ec;
  const std::string dir = fs::is_directory(path, ec) ? path : fs::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

std::string hf_config_path(const std::string& dir) {
  return (fs::path(dir) / "config.json").string();
}

void hf_load_pieces(const SafetensorsCheckpoint& ck, HfTensorMap& left,
                    const std::vector<HfPiece>& pieces, std::vector<float>& params,
                    const std::string& cfg_text) {
  std::vector<float> tmp;
  for (const HfPiece& p : pieces) {
    const auto e = take(ck, left, p.name, p.shape, cfg_text);
    const std::size_t n = e.tensor->elements;
    if (p.offset > params.size() || n > params.size() - p.offset)
      throw std::logic_error("hf_load_pieces: piece outside the buffer");
    float* dst = params.data() + p.offset;
    if (p.transposed) {
      tmp.resize(n);
      ck.to_float(e, tmp);
      transpose(tmp.data(), dst, p.shape[0], p.shape[1]);
    } else {
      ck.to_float(e, {dst, n});
    }
  }
}

void hf_check_tied(const SafetensorsCheckpoint& ck, HfTensorMap& left, const std::string& name,
                   const std::vector<std::size_t>& shape, const std::vector<float>& params,
                   std::size_t offset, const std::string& cfg_text, const std::string& why) {
  if (!left.count(name)) return;
  const auto e = take(ck, left, name, shape, cfg_text);
  std::vector<float> tmp(e.tensor->elements);
  ck.to_float(e, tmp);
  if (std::memcmp(tmp.data(), params.data() + offset, tmp.size() * 4) != 0)
    throw InputError(tensor_where(e) + ": " + why);
}

void hf_refuse_left(const HfTensorMap& left, const std::function<bool(const std::string&)>& ignored,
                    const std::string& what) {
  for (const auto& [name, e] : left)
    if (!ignored(name)) throw InputError(tensor_where(e) + ": " + what);
}

void hf_save_pieces(const std::string& path, const ModelConfig& cfg,
                    const std::vector<HfPiece>& pieces, const std::vector<float>& params,
                    StDtype dtype) {
  std::vector<StTensorOut> out;
  for (const HfPiece& p : pieces) {
    if (p.offset > params.size() || elements_of(p.shape) > params.size() - p.offset)
      throw std::logic_error("hf_save_pieces: piece outside the buffer");
    const float* src = params.data() + p.offset;
    out.push_back({p.name, p.shape, [src, p](std::span<float> d) {
                     if (p.transposed)
                       transpose(src, d.data(), p.shape[1], p.shape[0]); // [out, in] -> [in, out]
                     else
                       std::memcpy(d.data(), src, d.size() * 4);
                   }});
  }
  write_safetensors(path, out, dtype, {{"format", "pt"}});
  write_hf_config(hf_config_path(hf_dir_of(path)), cfg);
}

} // namespace myelin
