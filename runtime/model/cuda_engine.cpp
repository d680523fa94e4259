// The CUDA engine: the model (runtime/model/transformer.h) over the CUDA
// backend, with fp32 or bf16 storage.
#include "runtime/model/cuda_backend.h"
#include "runtime/model/transformer.h"

namespace myelin {

std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                         int max_T, const EngineOptions& opt) {
  if (opt.dtype == "fp32")
    return std::make_unique<ModelEngine<CudaBackend<float>>>(cfg, stage, max_B, max_T, opt);
  if (opt.dtype == "bf16")
    return std::make_unique<ModelEngine<CudaBackend<cuda::bf16>>>(cfg, stage, max_B, max_T, opt);
  throw std::invalid_argument("--dtype: expected fp32 or bf16, got '" + opt.dtype + "'");
}

} // namespace myelin
