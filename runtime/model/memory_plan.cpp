#include "runtime/model/memory_plan.h"

#include <cstdio>
#include <stdexcept>

namespace myelin {

std::size_t SlotSizes::bytes(std::size_t t) const {
  const std::size_t f = sizeof(float), i = sizeof(int);
  return t * (ln1 + qkv + atty + res2 + ln2 + fch + fch_gelu + res3 + x0 + lnf + logits) +
         f * (2 * ln_mean + 2 * ln_rstd + attn_state + lnf_mean + lnf_rstd + losses + 2 * io +
              2 * out_io) +
         i * (tokens + token_index + targets);
}

std::size_t SharedSizes::bytes(std::size_t t) const {
  return t * (dres + dln + proj + datty + dqkv + dfch + dact + gelu + ln + row_logits) +
         sizeof(float) * (attn + row_logits + 2 * rope);
}

MemoryPlan plan_memory(const ModelConfig& cfg, const StageSpec& st, int max_B, int max_T,
                       const std::string& device, const std::string& dtype, int recompute,
                       int slots, int zero_dp) {
  if (device != "cpu" && device != "cuda")
    throw std::invalid_argument("--device: expected cpu or cuda, got '" + device + "'");
  const bool cuda = device == "cuda";
  if (dtype != "fp32" && !(cuda && dtype == "bf16"))
    throw std::invalid_argument(cuda ? "--dtype: expected fp32 or bf16, got '" + dtype + "'"
                                     : "--dtype: the cpu device supports fp32 only");
  if (recompute < 0 || recompute > 2)
    throw std::invalid_argument("--recompute: expected 0, 1 or 2, got " +
                                std::to_string(recompute));
  if (max_B <= 0 || max_T <= 0 || slots < 1)
    throw std::invalid_argument("memory plan: batch, sequence and slots must be positive");
  MemoryPlan p;
  p.slots = slots;
  p.on_device = cuda;
  p.t_bytes = dtype == "bf16" ? 2 : 4;
  const std::size_t B = std::size_t(max_B), T = std::size_t(max_T), N = B * T,
                    C = std::size_t(cfg.channels), NC = N * C,
                    nl = std::size_t(st.layer_end - st.layer_begin),
                    NH = std::size_t(cfg.num_heads), Vp = std::size_t(cfg.padded_vocab_size),
                    Q = std::size_t(cfg.qkv_width()), F = std::size_t(cfg.fc_width()),
                    H = std::size_t(cfg.hidden());
  const bool layer_norm = !cfg.llama();
  // Attention's saved state per layer: CUDA keeps the row logsumexp, the CPU
  // the probabilities.
  const std::size_t attn_state = cuda ? N * NH : B * NH * T * T;

  SlotSizes& s = p.slot;
  s.x0 = NC;
  s.qkv = nl * N * Q;
  s.atty = nl * NC;
  s.res2 = nl * NC;
  s.fch = nl * N * F;
  s.res3 = nl * NC;
  s.fch_gelu = recompute >= 1 ? 0 : nl * N * H;
  s.ln1 = recompute >= 2 ? 0 : nl * NC;
  s.ln2 = recompute >= 2 ? 0 : nl * NC;
  s.ln_mean = layer_norm ? nl * N : 0;
  s.ln_rstd = nl * N;
  s.attn_state = nl * attn_state;
  if (st.first) {
    s.tokens = N;
    // CUDA: the tokens grouped by id (ids, offsets, positions); CPU: none.
    s.token_index = cuda ? 3 * N + 1 : 0;
  } else {
    s.io = NC;
  }
  if (st.last) {
    s.lnf = NC;
    s.lnf_mean = layer_norm ? N : 0;
    s.lnf_rstd = N;
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
    h.dqkv = N * Q;
    h.dfch = N * F;
    // d(fch_gelu): GeLU's backward runs in place over dfch on CUDA; the CPU's
    // accumulating GeLU backward and SwiGLU (H != F) need their own buffer.
    if (!layer_norm || !cuda) h.dact = N * H;
    // CUDA: the backward's row sums; CPU: d(scores) of one layer.
    h.attn = cuda ? N * NH : B * NH * T * T;
    if (recompute >= 1) h.gelu = N * H;
    if (recompute >= 2) h.ln = NC;
    if (cfg.llama()) h.rope = T * std::size_t(cfg.head_dim() / 2);
  }
  if (st.last) h.row_logits = Vp;

  // Parameters, gradients and AdamW moments: what the stage owns (its state
  // space, engine.h).
  const ParamLayout lay(cfg);
  const std::size_t S = StateIndex(st, lay, cfg.num_layers).size;
  const std::size_t padded = zero_padded_state(S, zero_dp);
  p.params = padded * sizeof(float) + (p.t_bytes == 2 ? S * 2 : 0);
  p.grads = padded * sizeof(float);
  p.optimizer = 2 * (zero_dp > 1 ? padded / std::size_t(zero_dp) : S) * sizeof(float);
  p.activations = std::size_t(slots) * s.bytes(p.t_bytes);
  p.scratch = h.bytes(p.t_bytes);
  if (cuda) p.workspace = std::size_t(64) << 20;
  return p;
}

std::string MemoryPlan::describe() const {
  const double g = 1024.0 * 1024.0 * 1024.0;
  char b[512];
  std::snprintf(b, sizeof(b),
                "%s memory plan (GiB): params %.2f | grads %.2f | AdamW %.2f | activations "
                "%.2f (%d slot%s) | scratch %.2f | workspace %.2f | total %.2f",
                on_device ? "device" : "host", params / g, grads / g, optimizer / g,
                activations / g, slots, slots == 1 ? "" : "s", scratch / g, workspace / g,
                total() / g);
  return b;
}

} // namespace myelin
