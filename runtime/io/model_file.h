// Model checkpoints in llm.c's format: 256 x int32 header (magic 20240326,
// version 3 = fp32 or 5 = bf16, maxT, V, L, NH, C, Vp), then every parameter in
// llm.c's order. Loading checks magic, version, shape and the exact file size,
// and refuses non-finite weights (runtime/io/finite_check.h).
#pragma once

#include <string>
#include <vector>

#include "runtime/io/file_util.h"
#include "runtime/model/config.h"
#include "runtime/util/bf16.h"

namespace myelin {

constexpr int kModelMagic = 20240326;

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
