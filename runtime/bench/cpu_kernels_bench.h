// CPU kernel benchmark (`myelin bench --device cpu`): every op of
// kernels/ops.h, forward and backward, at GPT-2 block shapes (the Llama-block
// ops at the same width: grouped-query attention with --kv-heads, RoPE on its
// q and k heads, SwiGLU of --intermediate, RMSNorm). It first measures this machine's limits
// (parallel copy bandwidth and a large sgemm), then for each kernel reports the median time over
// repetitions (caches flushed between runs by writing a buffer larger than the last-level cache),
// achieved GB/s and GFLOP/s from the kernel's byte and FLOP counts, the share of the limit that
// bounds it, and which limit that is.
#pragma once

#include <string>

namespace myelin {

struct CpuBenchOptions {
  std::string filter = ".*"; // ECMAScript regex over kernel names
  std::string output;        // JSON or CSV file (by extension); empty: none
  int repetitions = 10;
  int batch = 4, seq = 256, channels = 256, heads = 4, vocab = 256;
  int kv_heads = 0;     // Llama ops: 0 = heads / 2 when heads is even, else heads
  int intermediate = 0; // Llama ops: SwiGLU width I; 0 = 2 x channels
};

int run_cpu_kernel_bench(const CpuBenchOptions& opt);

} // namespace myelin
