// The model, written once: a transformer stage (or a whole model) of the GPT-2
// or the Llama family, forward and backward, plus the Engine bookkeeping around
// it (parameters, gradients, AdamW moments, activation slots, pipeline
// exchange), over any backend that meets runtime/model/backend.h. The CPU
// engine is ModelEngine<CpuBackend>, the CUDA engine ModelEngine<CudaBackend<T>>.
//
// Per layer (GPT-2 | Llama):
//   ln1  = LayerNorm(x) | RMSNorm(x)
//   qkv  = ln1 Wqkv^T (+ b);  Llama: RoPE on q and k, in place
//   atty = causal attention (multi-head | grouped-query)
//   res2 = x + atty Wo^T (+ b);  ln2 = norm(res2)   (fused)
//   fch  = ln2 Wfc^T (+ b);  act = GeLU(fch) | SwiGLU(fch = gate | up)
//   res3 = res2 + act Wproj^T (+ b), fused with the next norm (the next
//          layer's ln1 or the final norm)
// Head: logits = lnf Whead^T, Whead = wte (tied) or lm_head; the loss is the
// mean cross-entropy over the micro-batch, and the classifier writes
// d(mean loss)/d(logits) in place of the logits during the forward, so
// backward(dloss) only scales the head's matmul backward by dloss.
//
// Memory: sizes from plan_memory (runtime/model/memory_plan.h), allocated once.
// Parameters (fp32 masters, + a low-precision copy when T is not float),
// gradients and moments (fp32) cover only the stage's state space: the
// tensors it owns (StateIndex in engine.h), which are all it reads.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/ops.h"
#include "runtime/model/backend.h"
#include "runtime/model/engine.h"
#include "runtime/model/memory_plan.h"

namespace myelin {

template <ModelBackend Be> class ModelEngine final : public Engine {
  using T = typename Be::T;
  template <class U> using Buf = typename Be::template Buffer<U>;
  static constexpr bool kLowp = !std::is_same_v<T, float>;

 public:
  // `backend` is built first (it selects the device); opt.dtype names T.
  template <class... Args>
  ModelEngine(const ModelConfig& cfg, const StageSpec& st, int maxB, int maxT,
              const EngineOptions& opt, Args&&... backend_args)
      : be_(cfg, maxB, maxT, opt, std::forward<Args>(backend_args)...), cfg_(cfg), st_(st),
        lay_(cfg), maxB_(maxB), maxT_(maxT), recompute_(opt.recompute) {
    if (st_.layer_begin < 0 || st_.layer_end < st_.layer_begin || st_.layer_end > cfg_.num_layers)
      throw std::invalid_argument("pipeline stage layer range out of bounds");
    state_ = StateIndex(st_, lay_, cfg_.num_layers);
    cfg_.validate();
    validate_micro_batch(cfg_, maxB, maxT, key_names("engine micro-batch "));
    if (opt.slots < 1) throw std::invalid_argument("engine: slots must be >= 1");
    if (opt.zero_dp < 1) throw std::invalid_argument("engine: zero_dp must be >= 1");
    plan_ = plan_memory(cfg_, st_, maxB, maxT, opt.device, opt.dtype, opt.recompute, opt.slots,
                        opt.zero_dp);
    const std::size_t padded = zero_padded_state(state_.size, opt.zero_dp);
    master_.allocate(padded);
    if constexpr (kLowp) lowp_.allocate(state_.size);
    grads_.allocate(padded);
    m_.allocate(state_.size);
    v_.allocate(state_.size);
    opt_end_ = state_.size;
    const SlotSizes& z = plan_.slot;
    slots_.resize(std::size_t(opt.slots));
    for (Slot& s : slots_) {
      for (auto [b, n] : {std::pair{&s.x0, z.x0},
                          {&s.ln1, z.ln1},
                          {&s.qkv, z.qkv},
                          {&s.atty, z.atty},
                          {&s.res2, z.res2},
                          {&s.ln2, z.ln2},
                          {&s.fch, z.fch},
                          {&s.act, z.fch_gelu},
                          {&s.res3, z.res3},
                          {&s.lnf, z.lnf},
                          {&s.logits, z.logits}})
        b->allocate(n);
      for (auto [b, n] : {std::pair{&s.ln1_mean, z.ln_mean},
                          {&s.ln2_mean, z.ln_mean},
                          {&s.ln1_rstd, z.ln_rstd},
                          {&s.ln2_rstd, z.ln_rstd},
                          {&s.attn, z.attn_state},
                          {&s.lnf_mean, z.lnf_mean},
                          {&s.lnf_rstd, z.lnf_rstd},
                          {&s.losses, z.losses},
                          {&s.in_act, z.io},
                          {&s.in_grad, z.io},
                          {&s.out_act, z.out_io},
                          {&s.out_grad, z.out_io}})
        b->allocate(n);
      s.tokens.allocate(z.tokens);
      s.token_index.allocate(z.token_index);
      s.targets.allocate(z.targets);
    }
    const SharedSizes& h = plan_.shared;
    for (auto [b, n] : {std::pair{&dres_, h.dres},
                        {&dln_, h.dln},
                        {&proj_, h.proj},
                        {&datty_, h.datty},
                        {&dqkv_, h.dqkv},
                        {&dfch_, h.dfch},
                        {&dact_, h.dact},
                        {&act_rc_, h.gelu},
                        {&ln_rc_, h.ln},
                        {&row_logits_, h.row_logits}})
      b->allocate(n);
    step_sums_.allocate(2);
    attn_scratch_.allocate(h.attn);
    row_logits_f32_.allocate(h.row_logits);
    rope_cos_.allocate(h.rope);
    rope_sin_.allocate(h.rope);
    if (h.rope) {
      const int D = cfg_.head_dim();
      std::vector<float> c(h.rope), s(h.rope);
      cpu::rope_table(c.data(), s.data(), 0, maxT, D, cfg_.rope);
      be_.upload(rope_cos_.get(), c.data(), h.rope);
      be_.upload(rope_sin_.get(), s.data(), h.rope);
    }
    be_.sync();
  }

  ~ModelEngine() override {
    try {
      be_.sync();
    } catch (...) {
    }
  }

  const ModelConfig& config() const override { return cfg_; }
  const StageSpec& stage() const override { return st_; }
  const ParamLayout& layout() const override { return lay_; }
  std::string device_name() const override { return be_.name(); }
  int max_batch() const override { return maxB_; }
  int max_seq() const override { return maxT_; }
  double peak_flops() const override { return be_.peak_flops(); }
  void* device_stream() const override { return be_.stream(); }
  std::size_t graphs_captured() const override { return captured_; }
  MemoryUse memory_use() const override {
    MemoryUse u;
    u.params = master_.bytes() + lowp_.bytes();
    u.grads = grads_.bytes();
    u.optimizer = m_.bytes() + v_.bytes();
    u.activations = plan_.activations;
    u.scratch = plan_.scratch + be_.scratch_bytes();
    return u;
  }

  // ---- parameters and optimizer state ------------------------------------------------------
  void get_params(std::span<float> out) const override {
    if (out.size() != lay_.total) throw std::invalid_argument("engine: buffer size mismatch");
    std::vector<float> mine(state_.size);
    download(master_, mine, state_.size);
    std::fill(out.begin(), out.end(), 0.0f);
    for (const auto& p : state_.pieces(0, state_.size))
      std::copy_n(mine.begin() + long(p.state), p.count, out.begin() + long(p.flat));
  }
  void set_params(std::span<const float> in) override {
    if (in.size() != lay_.total) throw std::invalid_argument("engine: buffer size mismatch");
    std::vector<float> mine(state_.size);
    for (const auto& p : state_.pieces(0, state_.size))
      std::copy_n(in.begin() + long(p.flat), p.count, mine.begin() + long(p.state));
    upload(mine, master_, state_.size);
    params_changed();
  }
  void get_moments(std::span<float> m, std::span<float> v) const override {
    download(m_, m);
    download(v_, v);
  }
  void set_moments(std::span<const float> m, std::span<const float> v) override {
    upload(m, m_);
    upload(v, v_);
  }
  BufferView params() override { return view(master_.get(), state_.size, master_.size()); }
  void params_changed() override {
    if constexpr (kLowp) be_.convert(lowp_.get(), master_.get(), state_.size);
    be_.sync();
  }
  const StateIndex& state() const override { return state_; }
  BufferView grads() override { return view(grads_.get(), state_.size, grads_.size()); }
  void get_grads(std::span<float> out) const override { download(grads_, out, state_.size); }

  // ---- forward / backward ------------------------------------------------------------------
  float forward(int slot, const int* tokens, const int* targets, int B, int Tn) override {
    return run_forward(slot, tokens, targets, B, Tn, /*want_grad=*/true);
  }
  float eval_loss(const int* tokens, const int* targets, int B, int Tn) override {
    if (!(st_.first && st_.last)) throw std::logic_error("eval_loss needs a whole-model engine");
    if (!targets) throw std::invalid_argument("eval_loss: targets are required");
    return run_forward(0, tokens, targets, B, Tn, /*want_grad=*/false);
  }

  void backward(int slot, float dloss) override {
    Slot& s = slots_.at(std::size_t(slot));
    const int B = s.B, Tn = s.Tn, C = cfg_.channels, N = B * Tn;
    if (N == 0) throw std::logic_error("backward: no forward in this slot");
    if (st_.last && !s.have_dlogits)
      throw std::logic_error("backward: the last forward in this slot had no targets");
    const std::size_t NC = std::size_t(N) * C;
    const int nl = nlayers();
    T* dres = dres_.get();
    const auto head = [&] {
      if (st_.last) {
        // The logits hold d(mean loss)/d(logits); dloss scales the whole backward here.
        be_.matmul_backward(dln_.get(), G(this->head()), nullptr, s.logits.get(), s.lnf.get(),
                            P(this->head()), N, C, cfg_.padded_vocab_size, dloss);
        be_.zero(dres, NC);
        norm_backward(dres, kLnfw, -1, dln_.get(), stage_output(s, N), s.lnf_mean.get(),
                      s.lnf_rstd.get(), N);
      } else {
        be_.convert(dres, s.out_grad.get(), NC);
      }
    };
    const auto layer = [&](int i) {
      const T* x_in = i == 0 ? s.x0.get() : s.res3.get() + std::size_t(i - 1) * NC;
      layer_backward(acts(s, i, N), st_.layer_begin + i, x_in, B, Tn);
    };
    const auto tail = [&] {
      if (st_.first)
        be_.encoder_backward(G(kWte), cfg_.llama() ? nullptr : G(kWpe), dres, s.tokens.get(),
                             s.token_index.get(), s.token_count, B, Tn, C, cfg_.padded_vocab_size);
      else
        be_.convert(s.in_grad.get(), dres, NC);
    };
    const auto key = [&](int part) { // part: -1 all; with a hook, a layer, nl head, nl + 1 tail
      return GraphKey{Call::kBackward,
                      {std::uint64_t(slot), std::uint64_t(B), std::uint64_t(Tn),
                       std::uint64_t(part + 1) << 32 | std::uint32_t(s.token_count), bits(dloss)}};
    };
    if (!hook_) {
      device_work(key(-1), [&] {
        head();
        for (int i = nl - 1; i >= 0; --i) layer(i);
        tail();
      });
    } else { // the hook sees each layer's gradients complete: one graph per part
      device_work(key(nl), head);
      for (int i = nl - 1; i >= 0; --i) {
        device_work(key(i), [&] { layer(i); });
        be_.sync(); // layer l's gradients are in memory before the hook sees them
        hook_(st_.layer_begin + i);
      }
      device_work(key(nl + 1), tail);
    }
    s.have_dlogits = false; // consumed
    // Gradients and input_grad are complete when backward returns, except
    // inside a one-sync step on the first stage (end_step waits).
    if (!(in_step_ && st_.first)) be_.sync();
  }

  // ---- activation exchange (fp32 buffers in engine memory) ---------------------------------
  BufferView output_act(int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    if (st_.last) return {};
    const std::size_t n = s.B ? std::size_t(s.B) * s.Tn * cfg_.channels : s.out_act.size();
    return view(s.out_act.get(), n);
  }
  BufferView input_act(int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    return view(s.in_act.get(), s.in_act.size());
  }
  BufferView output_grad(int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    return view(s.out_grad.get(), s.out_grad.size());
  }
  BufferView input_grad(int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    return view(s.in_grad.get(), s.in_grad.size());
  }

  void last_logits(int position, std::span<float> out) override {
    if (!st_.last) throw std::logic_error("last_logits: not the last stage");
    const Slot& s = slots_.at(0);
    const std::size_t Vp = std::size_t(cfg_.padded_vocab_size);
    if (out.size() < Vp || position < 0 || position >= s.Tn)
      throw std::out_of_range("last_logits: bad position or buffer");
    // The logits buffer may hold d(loss)/d(logits) by now: recompute the one row.
    be_.matmul_forward(row_logits_.get(), s.lnf.get() + std::size_t(position) * cfg_.channels,
                       P(head()), nullptr, 1, cfg_.channels, int(Vp));
    be_.convert(row_logits_f32_.get(), row_logits_.get(), Vp);
    be_.download(out.data(), row_logits_f32_.get(), Vp);
  }

  // ---- gradients and update ----------------------------------------------------------------
  void set_backward_hook(std::function<void(int)> hook) override { hook_ = std::move(hook); }

  void shard_optimizer(std::size_t begin, std::size_t end) override {
    if (begin > end || end > state_.size) throw std::invalid_argument("shard_optimizer: bad range");
    be_.sync();
    opt_begin_ = begin;
    opt_end_ = end;
    m_.allocate(end - begin);
    v_.allocate(end - begin);
    graphs_.clear(); // the updates' graphs point to the old moments
    captured_ = 0;
    graphs_full_ = false;
    be_.sync();
  }
  std::pair<std::size_t, std::size_t> optimizer_range() const override {
    return {opt_begin_, opt_end_};
  }

  void zero_grad() override { be_.zero(grads_.get(), state_.size); }

  double grad_sum_squares(std::size_t begin, std::size_t end) override {
    return be_.sum_squares(grad_ranges(begin, end));
  }

  void scale_grads(float s) override { be_.scale(grads_.get(), state_.size, s); }

  void adamw(const AdamWConfig& c, float lr, int t, std::size_t begin, std::size_t end) override {
    if (begin < opt_begin_ || end > opt_end_)
      throw std::logic_error("adamw range outside the optimizer shard");
    if (t < 1) throw std::invalid_argument("adamw: step t must be >= 1");
    be_.update_scalars(UpdateArgs{lr, c.beta1, c.beta2, c.eps, c.weight_decay, t, 0, 0});
    const GraphKey key{Call::kAdamW,
                       {begin, end, bits(c.beta1) << 32 | bits(c.beta2),
                        bits(c.eps) << 32 | bits(c.weight_decay)}};
    device_work(key, [&] {
      for (const auto& p : state_.pieces(begin, end)) {
        const std::size_t o = p.state - opt_begin_; // moments hold only the shard
        // Stochastic rounding hashes the flat index: the same noise in every layout.
        const UpdateArgs args{
            lr, c.beta1, c.beta2, c.eps, ParamLayout::decays(p.tensor) ? c.weight_decay : 0.0f,
            t,  0,       p.flat};
        be_.adamw(kLowp ? P_state() + p.state : nullptr, master_.get() + p.state,
                  grads_.get() + p.state, m_.get() + o, v_.get() + o, p.count, args);
      }
    });
    if (!in_step_) be_.sync(); // params() is consistent when adamw returns (or at end_step)
  }

  // ---- a training step with one host synchronisation ---------------------------------------
  void begin_step() override { // a step an exception left open is dropped
    in_step_ = true;
    be_.zero(step_sums_.get(), 2);
  }
  void clip_grad_norm(float max_norm, std::size_t begin, std::size_t end) override {
    if (!in_step_) throw std::logic_error("clip_grad_norm outside begin_step/end_step");
    device_work(GraphKey{Call::kClip, {begin, end, bits(max_norm)}}, [&] {
      be_.sum_squares_into(step_sums_.get() + 1, grad_ranges(begin, end));
      be_.clip_by_norm(grads_.get(), state_.size, step_sums_.get() + 1, max_norm);
    });
  }
  StepSums end_step() override {
    if (!in_step_) throw std::logic_error("end_step without begin_step");
    in_step_ = false;
    double sums[2];
    be_.download(sums, step_sums_.get(), 2); // the step's one wait for the device
    return {sums[0], sums[1]};
  }

  Be& backend() { return be_; }

 private:
  struct Slot {
    Buf<T> x0, ln1, qkv, atty, res2, ln2, fch, act, res3, lnf, logits;
    Buf<float> ln1_mean, ln1_rstd, ln2_mean, ln2_rstd, attn, lnf_mean, lnf_rstd, losses;
    Buf<float> in_act, out_act, in_grad, out_grad;
    Buf<int> tokens, token_index, targets;
    int token_count = 0;
    int B = 0, Tn = 0;
    bool have_dlogits = false;
    std::vector<float> losses_host;
  };
  // Local layer i of a slot for a micro-batch of N rows; recomputed
  // activations point into the shared buffers.
  struct Acts {
    T *ln1, *qkv, *atty, *res2, *ln2, *fch, *act, *res3;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *attn;
  };
  Acts acts(Slot& s, int i, int N) const {
    const std::size_t n = std::size_t(N), ii = std::size_t(i), NC = n * cfg_.channels;
    const bool ln_rc = recompute_ >= 2, act_rc = recompute_ >= 1;
    const std::size_t attn_per = s.attn.size() / std::size_t(std::max(1, nlayers()));
    auto stat = [&](const Buf<float>& b) { return b.get() ? b.get() + ii * n : nullptr; };
    return {ln_rc ? ln_rc_.get() : s.ln1.get() + ii * NC,
            s.qkv.get() + ii * n * cfg_.qkv_width(),
            s.atty.get() + ii * NC,
            s.res2.get() + ii * NC,
            ln_rc ? ln_rc_.get() : s.ln2.get() + ii * NC,
            s.fch.get() + ii * n * cfg_.fc_width(),
            act_rc ? act_rc_.get() : s.act.get() + ii * n * cfg_.hidden(),
            s.res3.get() + ii * NC,
            stat(s.ln1_mean),
            stat(s.ln1_rstd),
            stat(s.ln2_mean),
            stat(s.ln2_rstd),
            s.attn.get() + ii * attn_per};
  }

  float run_forward(int slot, const int* tokens, const int* targets, int B, int Tn,
                    bool want_grad) {
    if (B <= 0 || Tn <= 0 || B > maxB_ || Tn > maxT_)
      throw std::invalid_argument("micro-batch shape exceeds the engine's allocation");
    Slot& s = slots_.at(std::size_t(slot));
    const int C = cfg_.channels, N = B * Tn;
    const std::size_t NC = std::size_t(N) * C;
    s.B = B;
    s.Tn = Tn;
    s.have_dlogits = false;
    // Host input first (checked, uploaded), then the device work.
    if (st_.first) {
      check_token_ids(tokens, std::size_t(N), cfg_.vocab_size, "forward: token");
      be_.upload(s.tokens.get(), tokens, std::size_t(N));
    }
    const bool with_targets = st_.last && targets;
    if (with_targets) {
      check_token_ids(targets, std::size_t(N), cfg_.vocab_size, "forward: target");
      be_.upload(s.targets.get(), targets, std::size_t(N));
    }
    const bool keep_loss = with_targets && in_step_ && want_grad; // summed in engine memory
    const GraphKey key{Call::kForward,
                       {std::uint64_t(slot), std::uint64_t(B), std::uint64_t(Tn),
                        std::uint64_t(want_grad | with_targets << 1 | keep_loss << 2)}};
    device_work(
        key,
        [&] {
          if (st_.first)
            be_.encoder_forward(s.x0.get(), s.tokens.get(), P(kWte),
                                cfg_.llama() ? nullptr : P(kWpe), B, Tn, C);
          else
            be_.convert(s.x0.get(), s.in_act.get(), NC);
          const int nl = nlayers();
          const T* x = s.x0.get();
          for (int i = 0; i < nl; ++i) {
            const Acts a = acts(s, i, N);
            if (i == 0) norm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, kLn1w, st_.layer_begin, N);
            layer_forward(s, i, x, B, Tn);
            x = a.res3;
          }
          if (st_.first) // the embedding backward's token grouping, while the device computes
            s.token_count = be_.index_tokens(s.token_index.get(), s.tokens.get(), tokens, N);
          if (!st_.last) return be_.convert(s.out_act.get(), x, NC);
          if (nl == 0)
            norm_forward(s.lnf.get(), s.lnf_mean.get(), s.lnf_rstd.get(), x, kLnfw, -1, N);
          const int V = cfg_.vocab_size, Vp = cfg_.padded_vocab_size;
          be_.matmul_forward(s.logits.get(), s.lnf.get(), P(head()), nullptr, N, C, Vp);
          if (!with_targets) return;
          be_.classifier(s.losses.get(), s.logits.get(), s.targets.get(), N, V, Vp, want_grad);
          if (keep_loss) be_.accumulate_mean_loss(step_sums_.get(), s.losses.get(), N);
        },
        st_.first ? &s.token_count : nullptr);
    s.have_dlogits = with_targets && want_grad;
    if (!with_targets || keep_loss) {
      // output_act (a middle stage) and the logits are ready when forward returns;
      // a loss kept for end_step is not waited for
      if (!keep_loss) be_.sync();
      return 0.0f;
    }
    s.losses_host.resize(std::size_t(N));
    be_.download(s.losses_host.data(), s.losses.get(), std::size_t(N));
    double sum = 0.0;
    for (float v : s.losses_host) sum += v;
    return static_cast<float>(sum / N);
  }

  // Layer i of the stage after its ln1 is in place; leaves res3 and, fused,
  // the next norm's output (the next layer's ln1, or lnf on the last stage).
  void layer_forward(Slot& s, int i, const T* x, int B, int Tn) {
    const int l = st_.layer_begin + i, C = cfg_.channels, N = B * Tn;
    const int NH = cfg_.num_heads, NKV = cfg_.kv_heads(), D = cfg_.head_dim(), Q = cfg_.qkv_width(),
              H = cfg_.hidden();
    const Acts a = acts(s, i, N);
    be_.matmul_forward(a.qkv, a.ln1, L(kQkvw, l), LB(kQkvb, l), N, C, Q);
    if (cfg_.llama())
      be_.rope_forward(a.qkv, rope_cos_.get(), rope_sin_.get(), B, Tn, NH + NKV, D, Q);
    be_.attention_forward(a.atty, a.attn, a.qkv, B, Tn, NH, NKV, D);
    be_.matmul_forward(proj_.get(), a.atty, L(kAttprojw, l), LB(kAttprojb, l), N, C, C);
    residual_norm_forward(a.res2, a.ln2, a.ln2_mean, a.ln2_rstd, x, kLn2w, l, N);
    if (cfg_.llama()) {
      be_.matmul_forward(a.fch, a.ln2, L(kFcw, l), nullptr, N, C, 2 * H);
      be_.swiglu_forward(a.act, a.fch, N, H);
    } else {
      be_.fc_gelu_forward(a.fch, a.act, a.ln2, L(kFcw, l), LB(kFcb, l), N, C, H);
    }
    be_.matmul_forward(proj_.get(), a.act, L(kFcprojw, l), LB(kFcprojb, l), N, H, C);
    if (i + 1 < nlayers()) {
      const Acts nx = acts(s, i + 1, N);
      residual_norm_forward(a.res3, nx.ln1, nx.ln1_mean, nx.ln1_rstd, a.res2, kLn1w, l + 1, N);
    } else if (st_.last) {
      residual_norm_forward(a.res3, s.lnf.get(), s.lnf_mean.get(), s.lnf_rstd.get(), a.res2, kLnfw,
                            -1, N);
    } else {
      be_.residual_forward(a.res3, a.res2, proj_.get(), std::size_t(N) * C);
    }
  }

  // dres holds d(res3) on entry and d(x_in) on exit.
  void layer_backward(const Acts& a, int l, const T* x_in, int B, int Tn) {
    const int C = cfg_.channels, N = B * Tn;
    const int NH = cfg_.num_heads, NKV = cfg_.kv_heads(), D = cfg_.head_dim(), Q = cfg_.qkv_width(),
              H = cfg_.hidden(), F = cfg_.fc_width();
    T* dres = dres_.get();
    T* dln = dln_.get();
    T* dact = dact_.get() ? dact_.get() : dfch_.get();
    // MLP: d(res3) reaches res2 through the skip connection unchanged.
    if (cfg_.llama()) {
      if (recompute_ >= 1) be_.swiglu_forward(a.act, a.fch, N, H);
      be_.matmul_backward(dact, G(kFcprojw, l), nullptr, dres, a.act, L(kFcprojw, l), N, H, C,
                          1.0f);
      be_.swiglu_backward(dfch_.get(), dact, a.fch, N, H);
    } else {
      if (recompute_ >= 1) be_.gelu_forward(a.act, a.fch, std::size_t(N) * H);
      be_.fcproj_gelu_backward(dfch_.get(), dact, G(kFcprojw, l), G(kFcprojb, l), dres, a.act,
                               L(kFcprojw, l), a.fch, N, H, C);
    }
    if (recompute_ >= 2) norm_apply(a.ln2, a.res2, kLn2w, l, a.ln2_mean, a.ln2_rstd, N);
    be_.matmul_backward(dln, G(kFcw, l), GB(kFcb, l), dfch_.get(), a.ln2, L(kFcw, l), N, C, F,
                        1.0f);
    norm_backward(dres, kLn2w, l, dln, a.res2, a.ln2_mean, a.ln2_rstd, N);
    // Attention: dres = d(res2) = d(attention projection output) + the skip.
    be_.matmul_backward(datty_.get(), G(kAttprojw, l), GB(kAttprojb, l), dres, a.atty,
                        L(kAttprojw, l), N, C, C, 1.0f);
    be_.attention_backward(dqkv_.get(), attn_scratch_.get(), datty_.get(), a.qkv, a.atty, a.attn, B,
                           Tn, NH, NKV, D);
    if (cfg_.llama())
      be_.rope_backward(dqkv_.get(), rope_cos_.get(), rope_sin_.get(), B, Tn, NH + NKV, D, Q);
    if (recompute_ >= 2) norm_apply(a.ln1, x_in, kLn1w, l, a.ln1_mean, a.ln1_rstd, N);
    be_.matmul_backward(dln, G(kQkvw, l), GB(kQkvb, l), dqkv_.get(), a.ln1, L(kQkvw, l), N, C, Q,
                        1.0f);
    norm_backward(dres, kLn1w, l, dln, x_in, a.ln1_mean, a.ln1_rstd, N);
  }

  // ---- the family's norm: LayerNorm (weight k, bias k + 1) or RMSNorm -----------------------
  // Layer l of a per-layer norm, or l = -1 for the final norm (lnfw / lnfb).
  const T* NW(int k, int l) const { return l < 0 ? P(k) : L(k, l); }
  void norm_forward(T* out, float* mean, float* rstd, const T* inp, int k, int l, int N) {
    if (cfg_.llama())
      be_.rmsnorm_forward(out, rstd, inp, NW(k, l), N, cfg_.channels, cfg_.norm_eps);
    else
      be_.layernorm_forward(out, mean, rstd, inp, NW(k, l), NW(k + 1, l), N, cfg_.channels);
  }
  // res = x + proj_, out = norm(res).
  void residual_norm_forward(T* res, T* out, float* mean, float* rstd, const T* x, int k, int l,
                             int N) {
    if (cfg_.llama())
      be_.residual_rmsnorm_forward(res, out, rstd, x, proj_.get(), NW(k, l), N, cfg_.channels,
                                   cfg_.norm_eps);
    else
      be_.residual_layernorm_forward(res, out, mean, rstd, x, proj_.get(), NW(k, l), NW(k + 1, l),
                                     N, cfg_.channels);
  }
  void norm_apply(T* out, const T* inp, int k, int l, const float* mean, const float* rstd, int N) {
    if (cfg_.llama())
      be_.rmsnorm_apply(out, inp, NW(k, l), rstd, N, cfg_.channels);
    else
      be_.layernorm_apply(out, inp, NW(k, l), NW(k + 1, l), mean, rstd, N, cfg_.channels);
  }
  void norm_backward(T* dinp, int k, int l, const T* dout, const T* inp, const float* mean,
                     const float* rstd, int N) {
    float* dw = l < 0 ? G(k) : G(k, l);
    if (cfg_.llama())
      be_.rmsnorm_backward(dinp, dw, dout, inp, NW(k, l), rstd, N, cfg_.channels);
    else
      be_.layernorm_backward(dinp, dw, l < 0 ? G(k + 1) : G(k + 1, l), dout, inp, NW(k, l), mean,
                             rstd, N, cfg_.channels);
  }

  // ---- graphs: the device work of a call, recorded once and replayed ------------------------
  // On a backend with graphs (GraphBackend: CUDA), device_work(key, queue)
  // runs `queue` plainly the first time a key is seen, captures it as a graph
  // the second time and replays the graph from then on. The key holds all
  // that decides which work `queue` enqueues with which pointers and
  // scalars: the call, the slot (its buffers), the shape, the backward part
  // and dloss, the forward's flags, the update's range and AdamW settings
  // (its lr and step come through update_scalars, outside the graph), the
  // clipping range and limit. Everything else queue() reads is fixed at
  // construction (buffers, the family, recompute, the backend's switches) or
  // clears the graphs when it changes (shard_optimizer: the moments).
  // `kept` names the one host value a queue computes (the token grouping's
  // count): remembered at the capture, restored at each replay. A shape seen
  // once (sampling's growing prompt) is never captured; at most kMaxGraphs
  // graphs per engine. If a capture fails, the engine warns once and runs
  // plainly from then on.
  enum class Call { kForward, kBackward, kClip, kAdamW };
  struct GraphKey {
    Call call;
    std::array<std::uint64_t, 5> v; // per call, see its device_work
    auto operator<=>(const GraphKey&) const = default;
  };
  static std::uint64_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }
  struct Recorded {
    int seen = 0, kept = 0;
    typename graph_of<Be>::type graph{};
  };
  static constexpr std::size_t kMaxGraphs = 64;
  template <class F> void device_work(const GraphKey& key, F&& queue, int* kept = nullptr) {
    if constexpr (GraphBackend<Be>) {
      if (be_.graphs() && !graphs_failed_) {
        Recorded& r = graphs_[key];
        if (!r.graph && ++r.seen >= 2) {
          if (captured_ >= kMaxGraphs) {
            if (!graphs_full_)
              std::fprintf(stderr,
                           "myelin: warning: %zu graphs captured, the most an engine "
                           "keeps; new shapes run without graphs\n",
                           kMaxGraphs);
            graphs_full_ = true;
          } else {
            try {
              r.graph = be_.capture(queue);
              ++captured_;
              if (kept) r.kept = *kept;
            } catch (const std::exception& e) {
              graphs_failed_ = true;
              std::fprintf(stderr,
                           "myelin: warning: graph capture failed, running without graphs: %s\n",
                           e.what());
            }
          }
        }
        if (r.graph) {
          if (kept) *kept = r.kept;
          return be_.launch(r.graph);
        }
      }
    }
    queue();
  }

  std::vector<FloatRange> grad_ranges(std::size_t begin, std::size_t end) const {
    std::vector<FloatRange> ranges;
    for (const auto& p : state_.pieces(begin, end))
      if (p.tensor != kWte || st_.first) // a tied wte counts on the first stage only
        ranges.push_back({grads_.get() + p.state, p.count});
    return ranges;
  }
  int nlayers() const { return st_.layer_end - st_.layer_begin; }
  int head() const { return cfg_.tied_head ? kWte : kLmHead; }
  // The residual stream leaving the stage's last layer (the stage input if none).
  const T* stage_output(Slot& s, int N) const {
    const int nl = nlayers();
    return nl > 0 ? s.res3.get() + std::size_t(nl - 1) * N * cfg_.channels : s.x0.get();
  }
  // Parameters as the kernels see them (T), gradients (fp32).
  // Parameters live in the state space too: a stage reads only what it owns.
  T* P_state() const {
    if constexpr (kLowp)
      return lowp_.get();
    else
      return master_.get();
  }
  T* P(int k) const { return P_state() + state_.of(lay_.offsets[k]); }
  T* L(int k, int l) const {
    return P_state() +
           state_.of(lay_.offsets[k] + lay_.per_layer(k, cfg_.num_layers) * std::size_t(l));
  }
  // A per-layer bias, or null when the family has none.
  T* LB(int k, int l) const { return lay_.sizes[k] ? L(k, l) : nullptr; }
  // Gradients live in the state space: only owned tensors have one.
  float* G(int k) const { return grads_.get() + state_.of(lay_.offsets[k]); }
  float* G(int k, int l) const {
    return grads_.get() +
           state_.of(lay_.offsets[k] + lay_.per_layer(k, cfg_.num_layers) * std::size_t(l));
  }
  float* GB(int k, int l) const { return lay_.sizes[k] ? G(k, l) : nullptr; }

  BufferView view(float* p, std::size_t n, std::size_t cap = 0) const {
    return {p, n, DType::kF32, be_.on_device(), std::max(n, cap)};
  }
  // The first `n` elements of an engine buffer (all of it by default; the
  // state, state_.size, of the ZeRO-padded master_ and grads_).
  void download(const Buf<float>& src, std::span<float> dst, std::size_t n = SIZE_MAX) const {
    n = std::min(n, src.size());
    if (dst.size() != n) throw std::invalid_argument("engine: buffer size mismatch");
    const_cast<Be&>(be_).download(dst.data(), src.get(), n);
  }
  void upload(std::span<const float> src, Buf<float>& dst, std::size_t n = SIZE_MAX) {
    n = std::min(n, dst.size());
    if (src.size() != n) throw std::invalid_argument("engine: buffer size mismatch");
    be_.upload(dst.get(), src.data(), n);
    be_.sync();
  }

  Be be_; // first: a device backend selects its device before anything allocates
  ModelConfig cfg_;
  StageSpec st_;
  ParamLayout lay_;
  StateIndex state_;
  int maxB_, maxT_;
  int recompute_ = 0;
  MemoryPlan plan_;
  std::function<void(int)> hook_;
  std::size_t opt_begin_ = 0, opt_end_ = 0; // AdamW moments cover [opt_begin_, opt_end_)
  Buf<float> master_, grads_, m_, v_;
  Buf<T> lowp_; // low-precision copy of the parameters (T != float)
  std::vector<Slot> slots_;
  Buf<T> dres_, dln_, proj_, datty_, dqkv_, dfch_, dact_, act_rc_, ln_rc_, row_logits_;
  Buf<float> attn_scratch_, row_logits_f32_, rope_cos_, rope_sin_;
  Buf<double> step_sums_;               // a one-sync step's loss sum and gradient sum of squares
  bool in_step_ = false;                // between begin_step and end_step
  std::map<GraphKey, Recorded> graphs_; // device_work's keys (seen once, or captured)
  std::size_t captured_ = 0;
  bool graphs_failed_ = false, graphs_full_ = false;
};

} // namespace myelin
