#include "runtime/model/memory_plan.h"

#include <cstdio>
#include <stdexcept>

namespace myelin {

std::size_t SlotSizes::bytes(std::size_t t) const {
  const std::size_t f = sizeof(float), i = sizeof(int);
  return t * (ln1 + qkv + atty + res2 + ln2 + fch + fch_gelu + res3 + x0 + lnf + logits) +
         f * (4 * ln_stat + lse + 2 * lnf_stat + losses + 2 * io + 2 * out_io) +
         i * (3 * tokens + boff + targets);
}

std::size_t SharedSizes::bytes(std::size_t t) const {
  return t * (dres + dln + proj + datty + dqkv + dfch + gelu + ln + row_logits) +
         sizeof(float) * (attn + row_logits);
}

CudaMemoryPlan plan_cuda_memory(const ModelConfig& cfg, const StageSpec& st, int max_B, int max_T,
                                const std::string& dtype, int recompute, int slots) {
  if (dtype != "fp32" && dtype != "bf16")
    throw std::invalid_argument("--dtype: expected fp32 or bf16, got '" + dtype + "'");
  if (recompute < 0 || recompute > 2)
    throw std::invalid_argument("--recompute: expected 0, 1 or 2, got " +
                                std::to_string(recompute));
  if (max_B <= 0 || max_T <= 0 || slots < 1)
    throw std::invalid_argument("memory plan: batch, sequence and slots must be positive");
  CudaMemoryPlan p;
  p.slots = slots;
  p.t_bytes = dtype == "bf16" ? 2 : 4;
  const std::size_t N = std::size_t(max_B) * max_T, C = std::size_t(cfg.channels), NC = N * C,
                    nl = std::size_t(st.layer_end - st.layer_begin),
                    NH = std::size_t(cfg.num_heads), Vp = std::size_t(cfg.padded_vocab_size);

  SlotSizes& s = p.slot;
  s.x0 = NC;
  s.qkv = nl * 3 * NC;
  s.atty = nl * NC;
  s.res2 = nl * NC;
  s.fch = nl * 4 * NC;
  s.res3 = nl * NC;
  s.fch_gelu = recompute >= 1 ? 0 : nl * 4 * NC;
  s.ln1 = recompute >= 2 ? 0 : nl * NC;
  s.ln2 = recompute >= 2 ? 0 : nl * NC;
  s.ln_stat = nl * N;
  s.lse = nl * N * NH;
  if (st.first) {
    s.tokens = N;
    s.boff = N + 1;
  } else {
    s.io = NC;
  }
  if (st.last) {
    s.lnf = NC;
    s.lnf_stat = N;
    s.logits = N * Vp;
    s.losses = N;
    s.targets = N;
  } else {
    s.out_io = NC;
  }

  SharedSizes& h = p.shared;
  h.dres = NC;
  h.dln = NC;
  h.proj = NC;
  if (nl > 0) {
    h.datty = NC;
    h.dqkv = 3 * NC;
    h.dfch = 4 * NC;
    h.attn = N * NH;
    if (recompute >= 1) h.gelu = 4 * NC;
    if (recompute >= 2) h.ln = NC;
  }
  if (st.last) h.row_logits = Vp;

  const std::size_t P = ParamLayout(cfg).total;
  p.params = P * sizeof(float) + (p.t_bytes == 2 ? P * 2 : 0);
  p.grads = P * sizeof(float);
  p.optimizer = 2 * P * sizeof(float);
  p.activations = std::size_t(slots) * s.bytes(p.t_bytes);
  p.scratch = h.bytes(p.t_bytes);
  return p;
}

std::string CudaMemoryPlan::describe() const {
  const double g = 1024.0 * 1024.0 * 1024.0;
  char b[512];
  std::snprintf(b, sizeof(b),
                "device memory plan (GiB): params %.2f | grads %.2f | AdamW %.2f | activations "
                "%.2f (%d slot%s) | scratch %.2f | workspace %.2f | total %.2f",
                params / g, grads / g, optimizer / g, activations / g, slots, slots == 1 ? "" : "s",
                scratch / g, workspace / g, total() / g);
  return b;
}

} // namespace myelin
