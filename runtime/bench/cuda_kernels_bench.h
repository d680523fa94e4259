// `myelin bench --device cuda`: times every CUDA kernel of the GPT-2 step at
// GPT-2 model shapes (the Llama step's at Llama presets) and reports achieved bandwidth / FLOP rate
// against the machine's measured limits (D2D copy bandwidth, large cuBLAS bf16 GEMM).
#pragma once

#include <string>

namespace myelin {

struct CudaBenchOptions {
  std::string filter = ".*"; // ECMAScript regex over kernel names (e.g. "matmul|attention")
  std::string output;        // file for machine-readable results; empty: none
  std::string format = "";   // json | csv; empty: from the output file's extension
  int repetitions = 20;      // timed runs per kernel (median reported)
  std::string models = "124M,350M,1.5B"; // presets: 124M, 350M, 774M, 1.5B, llama-135M, llama-1B
  int batch = 8;                         // B
  int seq = 1024;                        // T
  std::string dtype = "bf16";            // bf16 | fp32 (storage of activations/params)
  int device_index = 0;
};

// Prints an aligned table to stdout (and writes `output` if set). Returns 0 on
// success, 1 on a runtime failure, 2 on bad options.
int run_cuda_kernel_bench(const CudaBenchOptions& opt);

} // namespace myelin
