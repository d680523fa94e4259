// An engine's memory, planned on the host: how many elements each buffer
// holds for a model, a stage, a micro-batch shape, a device, a storage type
// and a recomputation level. Both engines (runtime/model/transformer.h over
// the CPU or the CUDA backend) allocate exactly these sizes, so the plan can
// be printed and checked on a machine without a GPU (`myelin train
// --memory-plan`).
//
// Per layer, with N = B*T, Q = (NH + 2 NKV) D the qkv width, F the first MLP
// matmul's width (GPT-2: 4C; Llama: 2I, gate | up) and H the MLP's hidden width
// (GPT-2: 4C; Llama: I), the forward stores ln1 (C), qkv (Q), atty (C), res2
// (C), ln2 (C), fch (F), the activation output fch_gelu (H: GeLU or SwiGLU) and
// res3 (C), each times N; plus the norm statistics (LayerNorm: mean and rstd;
// RMSNorm: rstd only) and the attention's saved state: on CUDA the row
// logsumexp (N x NH floats), on the CPU the probabilities (B x NH x T x T).
// Recomputation (`--recompute`):
//   0  store all of the above (GPT-2: 16 x B*T*C elements per layer);
//   1  do not store fch_gelu: the backward recomputes it from fch into one
//      shared buffer;
//   2  also do not store ln1, ln2: the backward recomputes them from their
//      inputs and the saved statistics (the same bits as the forward wrote)
//      into one shared buffer.
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
  std::size_t x0 = 0;                     // T: the stage input
  std::size_t lnf = 0, logits = 0;        // T: last stage
  std::size_t ln_mean = 0, ln_rstd = 0;   // float, each of ln1 and ln2 (mean: LayerNorm only)
  std::size_t attn_state = 0;             // float: attention's saved state (see above)
  std::size_t lnf_mean = 0, lnf_rstd = 0; // float, last stage
  std::size_t losses = 0;                 // float, last stage
  std::size_t io = 0;                     // float, each of in_act/in_grad (non-first stage)
  std::size_t out_io = 0;                 // float, each of out_act/out_grad (non-last stage)
  std::size_t tokens = 0;                 // int: tokens (first stage)
  std::size_t token_index = 0;            // int: the embedding backward's token index (first stage)
  std::size_t targets = 0;                // int (last stage)
  std::size_t bytes(std::size_t t_bytes) const;
};

// Buffers shared by all slots (backward and recomputation scratch).
struct SharedSizes {
  std::size_t dres = 0, dln = 0, proj = 0, datty = 0, dqkv = 0, dfch = 0; // T
  std::size_t dact = 0;       // T: d(fch_gelu) when it cannot share dfch (Llama; CPU)
  std::size_t gelu = 0;       // T: recomputed activation output
  std::size_t ln = 0;         // T: recomputed norm output
  std::size_t attn = 0;       // float: attention backward scratch
  std::size_t row_logits = 0; // T and float: one row of logits for sampling
  std::size_t rope = 0;       // float, each of the cos and sin tables (Llama)
  std::size_t bytes(std::size_t t_bytes) const;
};

// Elements of the fp32 parameter and gradient buffers for a state of S
// elements under ZeRO-1 over zero_dp ranks: S rounded up to a multiple of zero_dp.
inline std::size_t zero_padded_state(std::size_t S, int zero_dp) {
  const std::size_t n = zero_dp > 1 ? std::size_t(zero_dp) : 1;
  return (S + n - 1) / n * n;
}

struct MemoryPlan {
  SlotSizes slot;
  SharedSizes shared;
  int slots = 1;
  std::size_t t_bytes = 4; // storage type size: 4 (fp32) or 2 (bf16)
  bool on_device = false;
  // Bytes by purpose.
  std::size_t params = 0;      // fp32 master (+ bf16 copy)
  std::size_t grads = 0;       // fp32
  std::size_t optimizer = 0;   // fp32 AdamW m and v
  std::size_t activations = 0; // all slots
  std::size_t scratch = 0;     // shared buffers
  // CUDA only: kernel scratch and library workspace (cuBLASLt 32 MiB,
  // LayerNorm and bias partials, norm partials): an upper bound, not itemised.
  std::size_t workspace = 0;
  std::size_t total() const {
    return params + grads + optimizer + activations + scratch + workspace;
  }
  // One line per purpose, in GiB.
  std::string describe() const;
};

// device: "cpu" or "cuda"; dtype: "fp32" or "bf16" (cuda only); recompute
// 0..2; throws std::invalid_argument otherwise. zero_dp > 1: ZeRO-1 over that
// many data-parallel ranks: the AdamW moments of the largest shard (ceil(S /
// zero_dp) of the stage's S state elements), and the fp32 parameters and
// gradients padded to zero_dp such shards (EngineOptions::zero_dp).
MemoryPlan plan_memory(const ModelConfig& cfg, const StageSpec& stage, int max_B, int max_T,
                       const std::string& device, const std::string& dtype, int recompute,
                       int slots, int zero_dp = 1);

} // namespace myelin
