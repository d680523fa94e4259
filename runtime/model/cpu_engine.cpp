// The CPU engine: GPT-2 forward and backward on host fp32 buffers, calling the
// ops of kernels/ops.h in llm.c's order. All buffers are allocated once at
// construction; a pipeline stage computes only its layer range. With
// recompute 1 the GeLU outputs, with recompute 2 also the LayerNorm outputs
// ln1/ln2, live in one shared buffer instead of one per layer, and the
// backward recomputes them (bit-identical to what the forward wrote).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

#include "kernels/ops.h"
#include "runtime/model/engine.h"

namespace myelin {
namespace {

// Activations of one micro-batch in flight.
struct SlotActs {
  std::vector<int> tokens; // [N] (first stage)
  std::vector<float> x0;   // [N,C] stage input (embedding or received)
  std::vector<float> ln1, ln1_mean, ln1_rstd, qkv, atty, att, attproj, res2;
  std::vector<float> ln2, ln2_mean, ln2_rstd, fch, fch_gelu, fcproj, res3;
  std::vector<float> lnf, lnf_mean, lnf_rstd, logits, losses; // last stage
  std::vector<int> targets;
  std::vector<float> out_grad; // [N,C] gradient arriving from the next stage
  std::vector<float> in_grad;  // [N,C] gradient leaving to the previous stage
  int B = 0, T = 0;
};

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelConfig& cfg, const StageSpec& st, int max_B, int max_T, int slots,
            int recompute)
      : cfg_(cfg), st_(st), lay_(cfg), maxB_(max_B), maxT_(max_T), recompute_(recompute) {
    cfg_.validate();
    // Callers check the micro-batch against the model (validate_micro_batch);
    // this bounds the attention matrices below should one not have.
    validate_micro_batch(cfg_, max_B, max_T, key_names("engine micro-batch "));
    if (max_T > cfg.max_seq_len)
      throw std::invalid_argument("sequence length " + std::to_string(max_T) +
                                  " exceeds the model's max_seq_len " +
                                  std::to_string(cfg.max_seq_len));
    if (st.layer_begin < 0 || st.layer_end > cfg.num_layers || st.layer_begin > st.layer_end)
      throw std::invalid_argument("pipeline stage layer range out of bounds");
    params_.assign(lay_.total, 0.0f);
    grads_.assign(lay_.total, 0.0f);
    m_.assign(lay_.total, 0.0f);
    v_.assign(lay_.total, 0.0f);
    if (recompute < 0 || recompute > 2)
      throw std::invalid_argument("--recompute: expected 0, 1 or 2");
    opt_end_ = lay_.total;
    slots_.resize(std::max(1, slots));
    const std::size_t N = std::size_t(max_B) * max_T, C = cfg.channels, Ls = nlayers(),
                      NH = cfg.num_heads, Vp = cfg.padded_vocab_size;
    for (auto& s : slots_) {
      s.tokens.resize(N);
      s.targets.resize(N);
      s.x0.resize(N * C);
      s.ln1.resize(recompute_ >= 2 ? 0 : Ls * N * C);
      s.ln1_mean.resize(Ls * N);
      s.ln1_rstd.resize(Ls * N);
      s.qkv.resize(Ls * N * 3 * C);
      s.atty.resize(Ls * N * C);
      s.att.resize(Ls * max_B * NH * max_T * max_T);
      s.attproj.resize(Ls * N * C);
      s.res2.resize(Ls * N * C);
      s.ln2.resize(recompute_ >= 2 ? 0 : Ls * N * C);
      s.ln2_mean.resize(Ls * N);
      s.ln2_rstd.resize(Ls * N);
      s.fch.resize(Ls * N * 4 * C);
      s.fch_gelu.resize(recompute_ >= 1 ? 0 : Ls * N * 4 * C);
      s.fcproj.resize(Ls * N * C);
      s.res3.resize(Ls * N * C);
      if (st_.last) {
        s.lnf.resize(N * C);
        s.lnf_mean.resize(N);
        s.lnf_rstd.resize(N);
        s.logits.resize(N * Vp);
        s.losses.resize(N);
      }
      if (!st_.last) s.out_grad.resize(N * C);
      if (!st_.first) s.in_grad.resize(N * C);
    }
    dresid_.resize(N * C);
    dln_.resize(N * C);
    datty_.resize(N * C);
    dqkv_.resize(N * 3 * C);
    dfch_gelu_.resize(N * 4 * C);
    dfch_.resize(N * 4 * C);
    datt_scratch_.resize(std::size_t(max_B) * NH * max_T * max_T);
    if (recompute_ >= 1 && Ls > 0) gelu_rc_.resize(N * 4 * C);
    if (recompute_ >= 2 && Ls > 0) ln_rc_.resize(N * C);
  }

  const ModelConfig& config() const override { return cfg_; }
  const StageSpec& stage() const override { return st_; }
  const ParamLayout& layout() const override { return lay_; }
  std::string device_name() const override { return "cpu"; }
  int max_batch() const override { return maxB_; }
  int max_seq() const override { return maxT_; }
  MemoryUse memory_use() const override {
    auto b = [](const auto& v) { return v.size() * sizeof(v[0]); };
    MemoryUse u;
    u.params = b(params_);
    u.grads = b(grads_);
    u.optimizer = b(m_) + b(v_);
    for (const SlotActs& s : slots_)
      u.activations += b(s.tokens) + b(s.x0) + b(s.ln1) + b(s.ln1_mean) + b(s.ln1_rstd) + b(s.qkv) +
                       b(s.atty) + b(s.att) + b(s.attproj) + b(s.res2) + b(s.ln2) + b(s.ln2_mean) +
                       b(s.ln2_rstd) + b(s.fch) + b(s.fch_gelu) + b(s.fcproj) + b(s.res3) +
                       b(s.lnf) + b(s.lnf_mean) + b(s.lnf_rstd) + b(s.logits) + b(s.losses) +
                       b(s.targets) + b(s.out_grad) + b(s.in_grad);
    u.scratch = b(dresid_) + b(dln_) + b(datty_) + b(dqkv_) + b(dfch_gelu_) + b(dfch_) +
                b(datt_scratch_) + b(gelu_rc_) + b(ln_rc_);
    return u;
  }

  void get_params(std::span<float> out) const override { copy_to(params_, out); }
  void set_params(std::span<const float> in) override { copy_from(in, params_); }
  void get_moments(std::span<float> m, std::span<float> v) const override {
    copy_to(m_, m);
    copy_to(v_, v);
  }
  void set_moments(std::span<const float> m, std::span<const float> v) override {
    copy_from(m, m_);
    copy_from(v, v_);
  }

  float forward(int slot, const int* tokens, const int* targets, int B, int T) override {
    check_shape(B, T);
    SlotActs& s = slots_.at(slot);
    s.B = B;
    s.T = T;
    const int C = cfg_.channels, NH = cfg_.num_heads;
    const int N = B * T;
    if (st_.first) {
      check_token_ids(tokens, std::size_t(N), cfg_.vocab_size, "forward: token");
      std::copy(tokens, tokens + N, s.tokens.begin());
      cpu::encoder_forward(s.x0.data(), s.tokens.data(), P(kWte), P(kWpe), B, T, C);
    }
    const float* x = s.x0.data();
    for (int i = 0; i < nlayers(); ++i) {
      const int l = st_.layer_begin + i;
      const std::size_t nc = std::size_t(i) * N * C;
      float* ln1 = ln_buf(s.ln1, nc);
      float* qkv = s.qkv.data() + std::size_t(i) * N * 3 * C;
      float* atty = s.atty.data() + nc;
      float* att = s.att.data() + std::size_t(i) * B * NH * T * T;
      float* attproj = s.attproj.data() + nc;
      float* res2 = s.res2.data() + nc;
      float* ln2 = ln_buf(s.ln2, nc);
      float* fch = s.fch.data() + std::size_t(i) * N * 4 * C;
      float* fch_gelu = gelu_buf(s, std::size_t(i) * N * 4 * C);
      float* fcproj = s.fcproj.data() + nc;
      float* res3 = s.res3.data() + nc;
      cpu::layernorm_forward(ln1, s.ln1_mean.data() + i * N, s.ln1_rstd.data() + i * N, x,
                             L(kLn1w, l), L(kLn1b, l), N, C);
      cpu::matmul_forward(qkv, ln1, L(kQkvw, l), L(kQkvb, l), N, C, 3 * C);
      cpu::attention_forward(atty, att, qkv, B, T, C, NH);
      cpu::matmul_forward(attproj, atty, L(kAttprojw, l), L(kAttprojb, l), N, C, C);
      cpu::residual_forward(res2, x, attproj, std::size_t(N) * C);
      cpu::layernorm_forward(ln2, s.ln2_mean.data() + i * N, s.ln2_rstd.data() + i * N, res2,
                             L(kLn2w, l), L(kLn2b, l), N, C);
      cpu::matmul_forward(fch, ln2, L(kFcw, l), L(kFcb, l), N, C, 4 * C);
      cpu::gelu_forward(fch_gelu, fch, std::size_t(N) * 4 * C);
      cpu::matmul_forward(fcproj, fch_gelu, L(kFcprojw, l), L(kFcprojb, l), N, 4 * C, C);
      cpu::residual_forward(res3, res2, fcproj, std::size_t(N) * C);
      x = res3;
    }
    if (!st_.last) return 0.0f;
    const int V = cfg_.vocab_size, Vp = cfg_.padded_vocab_size;
    cpu::layernorm_forward(s.lnf.data(), s.lnf_mean.data(), s.lnf_rstd.data(), x, P(kLnfw),
                           P(kLnfb), N, C);
    cpu::matmul_forward(s.logits.data(), s.lnf.data(), P(kWte), static_cast<const float*>(nullptr),
                        N, C, Vp);
    if (targets == nullptr) return 0.0f;
    check_token_ids(targets, std::size_t(N), V, "forward: target");
    std::copy(targets, targets + N, s.targets.begin());
    cpu::classifier_forward_backward(s.losses.data(), static_cast<float*>(nullptr), s.logits.data(),
                                     s.targets.data(), N, V, Vp, 0.0f);
    double sum = 0.0;
    for (int n = 0; n < N; ++n) sum += s.losses[n];
    return static_cast<float>(sum / N);
  }

  float eval_loss(const int* tokens, const int* targets, int B, int T) override {
    if (!(st_.first && st_.last)) throw std::logic_error("eval_loss needs a whole-model engine");
    return forward(0, tokens, targets, B, T);
  }

  void backward(int slot, float dloss) override {
    SlotActs& s = slots_.at(slot);
    const int B = s.B, T = s.T, C = cfg_.channels, NH = cfg_.num_heads, N = B * T;
    const std::size_t NC = std::size_t(N) * C;
    const float* x_last =
        nlayers() > 0 ? s.res3.data() + std::size_t(nlayers() - 1) * NC : s.x0.data();
    float* dres = dresid_.data();
    if (st_.last) {
      const int V = cfg_.vocab_size, Vp = cfg_.padded_vocab_size;
      // dlogits in place over the saved logits: (softmax - onehot) * dloss / N.
      cpu::classifier_forward_backward(s.losses.data(), s.logits.data(), s.logits.data(),
                                       s.targets.data(), N, V, Vp, dloss / float(N));
      std::fill(dln_.begin(), dln_.begin() + NC, 0.0f);
      cpu::matmul_backward(dln_.data(), G(kWte), static_cast<float*>(nullptr), s.logits.data(),
                           s.lnf.data(), P(kWte), N, C, Vp);
      std::fill(dres, dres + NC, 0.0f);
      cpu::layernorm_backward(dres, G(kLnfw), G(kLnfb), dln_.data(), x_last, P(kLnfw),
                              s.lnf_mean.data(), s.lnf_rstd.data(), N, C);
    } else {
      std::copy(s.out_grad.begin(), s.out_grad.begin() + NC, dres);
    }
    for (int i = nlayers() - 1; i >= 0; --i) {
      const int l = st_.layer_begin + i;
      const std::size_t nc = std::size_t(i) * NC;
      const float* x_in = i == 0 ? s.x0.data() : s.res3.data() + nc - NC;
      const float* qkv = s.qkv.data() + std::size_t(i) * N * 3 * C;
      const float* atty = s.atty.data() + nc;
      const float* att = s.att.data() + std::size_t(i) * B * NH * T * T;
      const float* res2 = s.res2.data() + nc;
      const float* fch = s.fch.data() + std::size_t(i) * N * 4 * C;
      float* fch_gelu = gelu_buf(s, std::size_t(i) * N * 4 * C);
      if (recompute_ >= 1) cpu::gelu_forward(fch_gelu, fch, std::size_t(N) * 4 * C);
      // MLP: dres is d(res3) = d(fcproj); res2 receives it through the residual.
      zero(dfch_gelu_, std::size_t(N) * 4 * C);
      cpu::matmul_backward(dfch_gelu_.data(), G(kFcprojw, l), G(kFcprojb, l), dres, fch_gelu,
                           L(kFcprojw, l), N, 4 * C, C);
      zero(dfch_, std::size_t(N) * 4 * C);
      cpu::gelu_backward(dfch_.data(), fch, dfch_gelu_.data(), std::size_t(N) * 4 * C);
      float* ln2 = ln_buf(s.ln2, nc);
      if (recompute_ >= 2)
        cpu::layernorm_apply(ln2, res2, L(kLn2w, l), L(kLn2b, l), s.ln2_mean.data() + i * N,
                             s.ln2_rstd.data() + i * N, N, C);
      zero(dln_, NC);
      cpu::matmul_backward(dln_.data(), G(kFcw, l), G(kFcb, l), dfch_.data(), ln2, L(kFcw, l), N, C,
                           4 * C);
      cpu::layernorm_backward(dres, G(kLn2w, l), G(kLn2b, l), dln_.data(), res2, L(kLn2w, l),
                              s.ln2_mean.data() + i * N, s.ln2_rstd.data() + i * N, N, C);
      // Attention: dres is now d(res2) = d(attproj).
      zero(datty_, NC);
      cpu::matmul_backward(datty_.data(), G(kAttprojw, l), G(kAttprojb, l), dres, atty,
                           L(kAttprojw, l), N, C, C);
      zero(dqkv_, NC * 3);
      cpu::attention_backward(dqkv_.data(), datt_scratch_.data(), datty_.data(), qkv, att, B, T, C,
                              NH);
      float* ln1 = ln_buf(s.ln1, nc);
      if (recompute_ >= 2)
        cpu::layernorm_apply(ln1, x_in, L(kLn1w, l), L(kLn1b, l), s.ln1_mean.data() + i * N,
                             s.ln1_rstd.data() + i * N, N, C);
      zero(dln_, NC);
      cpu::matmul_backward(dln_.data(), G(kQkvw, l), G(kQkvb, l), dqkv_.data(), ln1, L(kQkvw, l), N,
                           C, 3 * C);
      cpu::layernorm_backward(dres, G(kLn1w, l), G(kLn1b, l), dln_.data(), x_in, L(kLn1w, l),
                              s.ln1_mean.data() + i * N, s.ln1_rstd.data() + i * N, N, C);
      if (hook_) hook_(l);
    }
    if (st_.first) {
      cpu::encoder_backward(G(kWte), G(kWpe), dres, s.tokens.data(), B, T, C,
                            cfg_.padded_vocab_size);
    } else {
      std::copy(dres, dres + NC, s.in_grad.begin());
    }
  }

  BufferView output_act(int slot) override {
    SlotActs& s = slots_.at(slot);
    const std::size_t NC = std::size_t(s.B) * s.T * cfg_.channels;
    float* p = nlayers() > 0 ? s.res3.data() + std::size_t(nlayers() - 1) * NC : s.x0.data();
    return view(p, NC);
  }
  BufferView input_act(int slot) override {
    return view(slots_.at(slot).x0.data(), slots_.at(slot).x0.size());
  }
  BufferView output_grad(int slot) override {
    return view(slots_.at(slot).out_grad.data(), slots_.at(slot).out_grad.size());
  }
  BufferView input_grad(int slot) override {
    return view(slots_.at(slot).in_grad.data(), slots_.at(slot).in_grad.size());
  }

  void last_logits(int position, std::span<float> out) override {
    const SlotActs& s = slots_.at(0);
    const std::size_t Vp = cfg_.padded_vocab_size;
    if (out.size() < Vp || position < 0 || position >= s.T)
      throw std::out_of_range("last_logits: bad position or buffer");
    std::copy_n(s.logits.data() + std::size_t(position) * Vp, Vp, out.data());
  }

  void set_backward_hook(std::function<void(int)> hook) override { hook_ = std::move(hook); }

  void shard_optimizer(std::size_t begin, std::size_t end) override {
    if (begin > end || end > lay_.total) throw std::invalid_argument("shard_optimizer: bad range");
    opt_begin_ = begin;
    opt_end_ = end;
    m_.assign(end - begin, 0.0f);
    v_.assign(end - begin, 0.0f);
    m_.shrink_to_fit();
    v_.shrink_to_fit();
  }
  std::pair<std::size_t, std::size_t> optimizer_range() const override {
    return {opt_begin_, opt_end_};
  }

  void zero_grad() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }
  BufferView grads() override { return view(grads_.data(), grads_.size()); }
  BufferView params() override { return view(params_.data(), params_.size()); }
  void params_changed() override {}

  double grad_sum_squares(std::size_t begin, std::size_t end) override {
    double sum = 0.0;
    for_owned(begin, end, /*for_norm=*/true, [&](std::size_t a, std::size_t b, int) {
      sum += cpu::sum_squares(grads_.data() + a, b - a);
    });
    return sum;
  }

  void scale_grads(float s) override { cpu::scale_inplace(grads_.data(), grads_.size(), s); }

  void adamw(const AdamWConfig& c, float lr, int t, std::size_t begin, std::size_t end) override {
    for_owned(begin, end, /*for_norm=*/false, [&](std::size_t a, std::size_t b, int k) {
      cpu::AdamWParams p{
          lr, c.beta1, c.beta2, c.eps, ParamLayout::decays(k) ? c.weight_decay : 0.0f, t};
      if (a < opt_begin_ || b > opt_end_)
        throw std::logic_error("adamw range outside the optimizer shard");
      const std::size_t o = a - opt_begin_;
      cpu::adamw_update(params_.data() + a, grads_.data() + a, m_.data() + o, v_.data() + o, b - a,
                        p);
    });
  }

 private:
  int nlayers() const { return st_.layer_end - st_.layer_begin; }
  // Where layer activations live: per layer at `off`, or the shared
  // recomputation buffer.
  float* ln_buf(std::vector<float>& per_layer, std::size_t off) {
    return recompute_ >= 2 ? ln_rc_.data() : per_layer.data() + off;
  }
  float* gelu_buf(SlotActs& s, std::size_t off) {
    return recompute_ >= 1 ? gelu_rc_.data() : s.fch_gelu.data() + off;
  }
  float* P(int k) { return params_.data() + lay_.offsets[k]; }
  float* G(int k) { return grads_.data() + lay_.offsets[k]; }
  float* L(int k, int l) { return P(k) + lay_.per_layer(k, cfg_.num_layers) * l; }
  float* G(int k, int l) { return G(k) + lay_.per_layer(k, cfg_.num_layers) * l; }

  static void zero(std::vector<float>& v, std::size_t n) { std::fill_n(v.begin(), n, 0.0f); }
  static BufferView view(float* p, std::size_t n) { return {p, n, DType::kF32, false}; }
  static void copy_to(const std::vector<float>& src, std::span<float> dst) {
    if (dst.size() != src.size()) throw std::invalid_argument("engine: buffer size mismatch");
    std::copy(src.begin(), src.end(), dst.begin());
  }
  static void copy_from(std::span<const float> src, std::vector<float>& dst) {
    if (dst.size() != src.size()) throw std::invalid_argument("engine: buffer size mismatch");
    std::copy(src.begin(), src.end(), dst.begin());
  }

  void check_shape(int B, int T) const {
    if (B <= 0 || T <= 0 || B > maxB_ || T > maxT_)
      throw std::invalid_argument("micro-batch shape exceeds the engine's allocation");
  }

  // Calls f(a, b, tensor) for each owned sub-range of [begin, end).
  template <class F> void for_owned(std::size_t begin, std::size_t end, bool for_norm, F&& f) {
    for (const auto& r : st_.owned_ranges(lay_, cfg_.num_layers, begin, end, for_norm))
      f(r.begin, r.end, r.tensor);
  }

  ModelConfig cfg_;
  StageSpec st_;
  ParamLayout lay_;
  int maxB_, maxT_;
  int recompute_ = 0;
  std::vector<float> params_, grads_, m_, v_;
  std::vector<SlotActs> slots_;
  std::function<void(int)> hook_;
  std::size_t opt_begin_ = 0, opt_end_ = 0;
  std::vector<float> dresid_, dln_, datty_, dqkv_, dfch_gelu_, dfch_, datt_scratch_;
  std::vector<float> gelu_rc_, ln_rc_; // shared recomputation buffers
};

} // namespace

std::unique_ptr<Engine> make_cpu_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                        int max_T, int slots, int recompute) {
  return std::make_unique<CpuEngine>(cfg, stage, max_B, max_T, slots, recompute);
}

} // namespace myelin
