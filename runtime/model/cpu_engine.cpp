// The CPU engine: the model (runtime/model/transformer.h) over the CPU backend.
#include "runtime/model/cpu_backend.h"
#include "runtime/model/transformer.h"

namespace myelin {

std::unique_ptr<Engine> make_cpu_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                        int max_T, const EngineOptions& opt) {
  return std::make_unique<ModelEngine<CpuBackend>>(cfg, stage, max_B, max_T, opt);
}

std::unique_ptr<Engine> make_cpu_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                        int max_T, int slots, int recompute) {
  EngineOptions opt;
  opt.device = "cpu";
  opt.slots = slots;
  opt.recompute = recompute;
  return make_cpu_engine(cfg, stage, max_B, max_T, opt);
}

} // namespace myelin
