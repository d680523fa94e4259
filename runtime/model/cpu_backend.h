// The CPU backend of the model (contract: runtime/model/backend.h): host
// memory, the calling thread (OpenMP inside the ops) and the kernels of
// kernels/ops.h, adapted to the backend convention: the CPU ops accumulate
// every gradient, so ops whose activation gradient the convention overwrites
// zero it first (a memset beside a matmul), and GeLU's backward goes through
// its own d(act) buffer (the memory plan gives the CPU one).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "runtime/model/backend.h"
#include "runtime/model/config.h"
#include "runtime/model/engine.h"

namespace myelin {

class CpuBackend {
 public:
  using T = float;
  template <class U> class Buffer {
   public:
    void allocate(std::size_t n) {
      v_.assign(n, U{});
      v_.shrink_to_fit();
    }
    U* get() const { return v_.empty() ? nullptr : const_cast<U*>(v_.data()); }
    std::size_t size() const { return v_.size(); }
    std::size_t bytes() const { return v_.size() * sizeof(U); }

   private:
    std::vector<U> v_;
  };

  CpuBackend(const ModelConfig&, int, int, const EngineOptions& opt) {
    if (opt.dtype != "fp32")
      throw std::invalid_argument("--dtype: the cpu device supports fp32 only");
  }
  std::string name() const { return "cpu"; }
  bool on_device() const { return false; }
  void* stream() const { return nullptr; }
  double peak_flops() const { return 0.0; }
  void sync() {}
  std::size_t scratch_bytes() const { return 0; }

  // ---- memory -----------------------------------------------------------------------------
  template <class U> void zero(U* p, std::size_t n) {
    if (n) std::memset(p, 0, n * sizeof(U));
  }
  template <class U> void upload(U* dst, const U* host, std::size_t n) {
    std::copy_n(host, n, dst);
  }
  template <class U> void download(U* host, const U* src, std::size_t n) {
    std::copy_n(src, n, host);
  }
  template <class D, class S> void convert(D* dst, const S* src, std::size_t n) {
    std::copy_n(src, n, dst);
  }

  // ---- embedding ----------------------------------------------------------------------------
  void encoder_forward(T* out, const int* tokens, const T* wte, const T* wpe, int B, int Tn,
                       int C) {
    cpu::encoder_forward(out, tokens, wte, wpe, B, Tn, C);
  }
  int index_tokens(int*, const int*, const int*, int) { return 0; } // the backward reads tokens
  void encoder_backward(float* dwte, float* dwpe, const T* dout, const int* tokens, const int*, int,
                        int B, int Tn, int C, int Vp) {
    cpu::encoder_backward(dwte, dwpe, dout, tokens, B, Tn, C, Vp);
  }

  // ---- norms and residual -------------------------------------------------------------------
  void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b,
                         int N, int C) {
    cpu::layernorm_forward(out, mean, rstd, inp, w, b, N, C);
  }
  void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* w, int N, int C, float eps) {
    cpu::rmsnorm_forward(out, rstd, inp, w, N, C, eps);
  }
  void residual_layernorm_forward(T* res, T* out, float* mean, float* rstd, const T* a, const T* b,
                                  const T* w, const T* bias, int N, int C) {
    cpu::residual_forward(res, a, b, std::size_t(N) * C);
    cpu::layernorm_forward(out, mean, rstd, res, w, bias, N, C);
  }
  void residual_rmsnorm_forward(T* res, T* out, float* rstd, const T* a, const T* b, const T* w,
                                int N, int C, float eps) {
    cpu::residual_forward(res, a, b, std::size_t(N) * C);
    cpu::rmsnorm_forward(out, rstd, res, w, N, C, eps);
  }
  void layernorm_apply(T* out, const T* inp, const T* w, const T* b, const float* mean,
                       const float* rstd, int N, int C) {
    cpu::layernorm_apply(out, inp, w, b, mean, rstd, N, C);
  }
  void rmsnorm_apply(T* out, const T* inp, const T* w, const float* rstd, int N, int C) {
    cpu::rmsnorm_apply(out, inp, w, rstd, N, C);
  }
  void layernorm_backward(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w,
                          const float* mean, const float* rstd, int N, int C) {
    cpu::layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
  }
  void rmsnorm_backward(T* dinp, float* dw, const T* dout, const T* inp, const T* w,
                        const float* rstd, int N, int C) {
    cpu::rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
  }
  void residual_forward(T* out, const T* a, const T* b, std::size_t n) {
    cpu::residual_forward(out, a, b, n);
  }

  // ---- matmuls and MLP ----------------------------------------------------------------------
  void matmul_forward(T* out, const T* inp, const T* w, const T* bias, int N, int IC, int OC) {
    cpu::matmul_forward(out, inp, w, bias, N, IC, OC);
  }
  void matmul_backward(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w,
                       int N, int IC, int OC, float scale) {
    if (dinp) zero(dinp, std::size_t(N) * IC);
    cpu::matmul_backward(dinp, dw, db, dout, inp, w, N, IC, OC, scale);
  }
  void fc_gelu_forward(T* pre, T* act, const T* inp, const T* w, const T* b, int N, int IC,
                       int OC) {
    cpu::matmul_forward(pre, inp, w, b, N, IC, OC);
    cpu::gelu_forward(act, pre, std::size_t(N) * OC);
  }
  void gelu_forward(T* out, const T* inp, std::size_t n) { cpu::gelu_forward(out, inp, n); }
  void fcproj_gelu_backward(T* dpre, T* dact, float* dw, float* db, const T* dout, const T* act,
                            const T* w, const T* pre, int N, int IC, int OC) {
    if (dact == dpre) throw std::logic_error("cpu backend: GeLU backward needs its own d(act)");
    matmul_backward(dact, dw, db, dout, act, w, N, IC, OC, 1.0f);
    zero(dpre, std::size_t(N) * IC);
    cpu::gelu_backward(dpre, pre, dact, std::size_t(N) * IC);
  }
  void swiglu_forward(T* out, const T* gate_up, int N, int I) {
    cpu::swiglu_forward(out, gate_up, N, I);
  }
  void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int I) {
    zero(dgate_up, std::size_t(N) * 2 * I);
    cpu::swiglu_backward(dgate_up, dout, gate_up, N, I);
  }

  // ---- attention ----------------------------------------------------------------------------
  void rope_forward(T* x, const float* cos, const float* sin, int B, int Tn, int H, int D, int ld) {
    cpu::rope_forward(x, x, cos, sin, B, Tn, H, D, ld);
  }
  void rope_backward(T* dx, const float* cos, const float* sin, int B, int Tn, int H, int D,
                     int ld) {
    cpu::rope_backward(dx, dx, cos, sin, B, Tn, H, D, ld);
  }
  // state: the probabilities [B, NH, T, T]; scratch: B*NH*T*T floats.
  void attention_forward(T* out, float* state, const T* qkv, int B, int Tn, int NH, int NKV,
                         int D) {
    cpu::gqa_attention_forward(out, state, qkv, B, Tn, NH, NKV, D);
  }
  void attention_backward(T* dqkv, float* scratch, const T* dout, const T* qkv, const T*,
                          const float* state, int B, int Tn, int NH, int NKV, int D) {
    zero(dqkv, std::size_t(B) * Tn * (NH + 2 * NKV) * D);
    cpu::gqa_attention_backward(dqkv, scratch, dout, qkv, state, B, Tn, NH, NKV, D);
  }

  // ---- loss ---------------------------------------------------------------------------------
  void classifier(float* losses, T* logits, const int* targets, int N, int V, int Vp,
                  bool write_dlogits) {
    cpu::classifier_forward_backward(losses, write_dlogits ? logits : nullptr, logits, targets, N,
                                     V, Vp, 1.0f / float(N));
  }

  // ---- optimizer ----------------------------------------------------------------------------
  void update_scalars(const UpdateArgs&) {} // adamw takes them per call
  void adamw(T*, float* master, const float* grads, float* m, float* v, std::size_t n,
             const UpdateArgs& a) {
    cpu::adamw_update(master, grads, m, v, n,
                      cpu::AdamWParams{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.t});
  }
  double sum_squares(std::span<const FloatRange> ranges) {
    double sum = 0.0;
    for (const FloatRange& r : ranges) sum += cpu::sum_squares(r.data, r.count);
    return sum;
  }
  void scale(float* x, std::size_t n, float s) { cpu::scale_inplace(x, n, s); }

  // ---- step scalars -------------------------------------------------------------------------
  void sum_squares_into(double* out, std::span<const FloatRange> ranges) {
    *out = sum_squares(ranges);
  }
  void clip_by_norm(float* x, std::size_t n, const double* sumsq, float max_norm) {
    const float norm = float(std::sqrt(*sumsq));
    if (max_norm > 0.0f && norm > max_norm) scale(x, n, max_norm / norm);
  }
  void accumulate_mean_loss(double* acc, const float* losses, int N) {
    double sum = 0.0;
    for (int i = 0; i < N; ++i) sum += losses[i];
    *acc += double(float(sum / N));
  }
};

static_assert(ModelBackend<CpuBackend>);

} // namespace myelin
