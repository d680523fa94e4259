// The tensor table shared by the Hugging Face model mappings (hf_gpt2.h,
// hf_llama.h): each Hugging Face tensor of a checkpoint is one HfPiece, a
// contiguous block of the flat parameter buffer (runtime/model/config.h
// ParamLayout) stored either as is or transposed.
//
// Contract: hf_load_pieces takes every piece's tensor out of `left` (the
// checkpoint's tensors not yet claimed, by name), requires its shape to be the
// piece's, and converts it into the buffer; a tensor missing or of another
// shape is an InputError naming the file and the tensor and saying what the
// config (`cfg_text`) expected. hf_check_tied claims an optional tensor that
// must equal a block of the buffer (a tied head stored anyway). hf_refuse_left
// refuses the first tensor still in `left` that `ignored` does not accept.
// hf_save_pieces writes the pieces in order as one safetensors file (F32 or
// BF16) and config.json beside it (runtime/io/hf_config.h), each atomically.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/io/safetensors.h"
#include "runtime/model/config.h"

namespace myelin {

struct HfPiece {
  std::string name;
  std::vector<std::size_t> shape; // as stored in the checkpoint
  std::size_t offset = 0;         // first element in the parameter buffer
  // Stored [in, out] (GPT-2's Conv1D) while the buffer holds [out, in].
  bool transposed = false;
};

using HfTensorMap = std::map<std::string, SafetensorsCheckpoint::Entry>;

std::string shape_text(const std::vector<std::size_t>& s);
// "<file>: tensor <name>", the prefix of every message about a tensor.
std::string tensor_where(const SafetensorsCheckpoint::Entry& e);
// The folder a checkpoint path's config.json sits in (the path itself for a folder).
std::string hf_dir_of(const std::string& path);
std::string hf_config_path(const std::string& dir);

void hf_load_pieces(const SafetensorsCheckpoint& ck, HfTensorMap& left,
                    const std::vector<HfPiece>& pieces, std::vector<float>& params,
                    const std::string& cfg_text);
// If `name` is in `left`: takes it, requires `shape`, and requires its values
// to equal params[offset, offset + elements) bit for bit, else InputError
// "<tensor>: <why>".
void hf_check_tied(const SafetensorsCheckpoint& ck, HfTensorMap& left, const std::string& name,
                   const std::vector<std::size_t>& shape, const std::vector<float>& params,
                   std::size_t offset, const std::string& cfg_text, const std::string& why);
void hf_refuse_left(const HfTensorMap& left, const std::function<bool(const std::string&)>& ignored,
                    const std::string& what);
void hf_save_pieces(const std::string& path, const ModelConfig& cfg,
                    const std::vector<HfPiece>& pieces, const std::vector<float>& params,
                    StDtype dtype);

} // namespace myelin
