// The CUDA engine's device memory, planned on the host: how many elements each
// buffer holds for a model, a stage, a micro-batch shape, a storage type and a
// recomputation level. The CUDA engine allocates exactly these sizes, so the
// plan can be printed and checked on a machine without a GPU
// (`myelin train --memory-plan`).
//
// Recomputation (`--recompute`):
//   0  store every activation the backward reads: per layer ln1, qkv (3),
//      atty, res2, ln2, fch (4), fch_gelu (4), res3 = 16 x B*T*C elements;
//   1  do not store the GeLU output (fch_gelu): the backward recomputes it
//      from fch into one shared buffer; 12 x B*T*C per layer;
//   2  also do not store the LayerNorm outputs ln1, ln2: the backward
//      recomputes them from their inputs and the saved mean/rstd (the same
//      bits as the forward wrote) into one shared buffer; 10 x B*T*C per layer.
#pragma once

#include <cstddef>
#include <string>

#include "runtime/model/config.h"
#include "runtime/model/engine.h"

namespace myelin {

// Element counts of one activation slot (a micro-batch in flight). Storage
// type T unless noted; a count of 0 means the buffer is not allocated.
struct SlotSizes {
  // T, stored per layer (already multiplied by the stage's layer count)
  std::size_t ln1 = 0, qkv = 0, atty = 0, res2 = 0, ln2 = 0, fch = 0, fch_gelu = 0, res3 = 0;
  std::size_t x0 = 0;                   // T: the stage input
  std::size_t lnf = 0, logits = 0;      // T: last stage
  std::size_t ln_stat = 0;              // float, each of ln1/ln2 mean and rstd
  std::size_t lse = 0;                  // float: attention logsumexp
  std::size_t lnf_stat = 0, losses = 0; // float, last stage (lnf mean and rstd each)
  std::size_t io = 0;                   // float, each of in_act/in_grad (non-first stage)
  std::size_t out_io = 0;               // float, each of out_act/out_grad (non-last stage)
  std::size_t tokens = 0;               // int, each of tokens/btok/bpos (first stage)
  std::size_t boff = 0;                 // int: bucket offsets (first stage)
  std::size_t targets = 0;              // int (last stage)
  std::size_t bytes(std::size_t t_bytes) const;
};

// Buffers shared by all slots (backward and recomputation scratch).
struct SharedSizes {
  std::size_t dres = 0, dln = 0, proj = 0, datty = 0, dqkv = 0, dfch = 0; // T
  std::size_t gelu = 0;       // T: recomputed (or, in the forward, unstored) GeLU output
  std::size_t ln = 0;         // T: recomputed (or unstored) LayerNorm output
  std::size_t attn = 0;       // float: attention backward row sums
  std::size_t row_logits = 0; // T and float: one row of logits for sampling
  std::size_t bytes(std::size_t t_bytes) const;
};

struct CudaMemoryPlan {
  SlotSizes slot;
  SharedSizes shared;
  int slots = 1;
  std::size_t t_bytes = 4; // storage type size: 4 (fp32) or 2 (bf16)
  // Bytes by purpose.
  std::size_t params = 0;      // fp32 master (+ bf16 copy)
  std::size_t grads = 0;       // fp32
  std::size_t optimizer = 0;   // fp32 AdamW m and v
  std::size_t activations = 0; // all slots
  std::size_t scratch = 0;     // shared buffers
  // Kernel scratch and library workspace (cuBLASLt 32 MiB, LayerNorm and bias
  // partials, norm partials): an upper bound, not itemised.
  std::size_t workspace = std::size_t(64) << 20;
  std::size_t total() const {
    return params + grads + optimizer + activations + scratch + workspace;
  }
  // One line per purpose, in GiB.
  std::string describe() const;
};

// dtype: "fp32" or "bf16"; recompute 0..2; throws std::invalid_argument otherwise.
CudaMemoryPlan plan_cuda_memory(const ModelConfig& cfg, const StageSpec& stage, int max_B, int max_T,
                                const std::string& dtype, int recompute, int slots);

} // namespace myelin
