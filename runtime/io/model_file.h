// Myelin's model files (model.bin of a checkpoint, --save without
// .safetensors, the pool's models): a 256 x int32 little-endian header, then
// every parameter in ParamLayout order (runtime/model/config.h), fp32
// (version 3) or bf16 (version 5, round to nearest even).
//   GPT-2 family: llm.c's format. Header: magic 20240326, version, maxT, V, L,
//     NH, C, Vp; the rest is not read.
//   Llama family: the same layout under its own magic (kLlamaModelMagic) with
//     every other ModelConfig field in the header:
//       [0] magic 20261201  [1] version 3 | 5  [2] maxT  [3] V  [4] L  [5] NH
//       [6] C  [7] Vp  [8] kv heads  [9] intermediate size  [10] tied head
//       (0 | 1)  [11] Llama 3 rope scaling (0 | 1)  [12] norm eps (float bits)
//       [13..22] five doubles, each as two words (low word first): rope theta,
//       factor, low_freq_factor, high_freq_factor, original max position
//       [23..255] zero.
//     A GPT-2 model is always written in llm.c's format, a Llama one always
//     in this one.
// Loading checks magic, version, the header through ModelConfig::validate
// (errors name "<path>: bad model header: <field>"), the flags and the
// reserved words, and the exact file size, and refuses non-finite weights
// (runtime/io/finite_check.h).
#pragma once

#include <string>
#include <vector>

#include "runtime/io/file_util.h"
#include "runtime/model/config.h"
#include "runtime/util/bf16.h"

namespace myelin {

constexpr int kModelMagic = 20240326;      // llm.c, GPT-2 family
constexpr int kLlamaModelMagic = 20261201; // Llama family

struct ModelFile {
  ModelConfig config;
  std::vector<float> params; // fp32, ParamLayout(config).total elements
  int version = 3;
};

ModelFile load_model(const std::string& path);
// The shape from the header only (the header and file size are checked as by load_model).
ModelConfig load_model_config(const std::string& path);
// version 3 writes fp32, version 5 writes bf16 (round to nearest even);
// atomically, fsynced unless durability says otherwise (file_util.h).
void save_model(const std::string& path, const ModelConfig& cfg, const std::vector<float>& params,
                int version = 3, Durability durability = Durability::kFsync);

} // namespace myelin
