// The op interface of Myelin's CPU backend: every op of a GPT-2 block and of a
// Llama block (RMSNorm, RoPE, SwiGLU, grouped-query attention), forward and
// backward, on host buffers.
//
// Every op is a function template over the scalar type Real. Only declarations
// live here; kernels/cpu/*.cpp define them and explicitly instantiate them for
// Real = float (the training backend, fp32 math) and Real = double (reference
// checks in tests). Any other Real fails at link time. Real is deduced from the
// required pointer arguments; scalar arguments (dloss, s, eps) and the pointers that
// may be null (matmul bias/dinp/dbias, classifier dlogits) are non-deduced
// (nondeduced_t), so a literal nullptr or a double constant can be passed
// without naming Real, e.g. matmul_forward(out, inp, w, nullptr, N, IC, OC).
//
// Shapes are plain integers; N is the number of token positions (B*T). Backward
// functions ACCUMULATE (+=) into every gradient they write, so gradient
// accumulation over micro-batches needs no extra pass; the caller zeroes
// gradient buffers at the start of a step.
//
// Threads: all parallelism comes from OpenMP (omp_set_num_threads / --threads),
// matmuls and attention included: each OpenMP thread calls a single-threaded
// OpenBLAS gemm on its tiles (the pthreads OpenBLAS is switched to 1 thread for
// the duration of such a call and restored afterwards), because OpenBLAS's own
// thread pool running right after an OpenMP region oversubscribes the cores.
// All results are deterministic (no atomics) and the same bits for any thread
// count: work is cut by the shape (fixed row blocks, tiles, chunks), never by
// the number of threads, so a replay on another machine matches. Nothing here
// knows about models, ranks or files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace myelin::cpu {

// An argument that takes its type from the other arguments instead of deducing it.
template <typename Real> using nondeduced_t = std::type_identity_t<Real>;

// ---- embedding: out[n,:] = wte[tok[n],:] + wpe[t(n),:] ----------------------
// wpe may be null (rotary models): out[n,:] = wte[tok[n],:].
template <typename Real>
void encoder_forward(Real* out, const int* tokens, const Real* wte, const nondeduced_t<Real>* wpe,
                     int B, int T, int C);
// Accumulates into dwte and dwpe (dwpe may be null). Deterministic: rows are
// owned by one thread.
template <typename Real>
void encoder_backward(Real* dwte, nondeduced_t<Real>* dwpe, const Real* dout, const int* tokens,
                      int B, int T, int C, int Vp);

// ---- LayerNorm over the last dimension (eps = 1e-5) -------------------------
// mean and rstd (length N) are saved for the backward pass.
template <typename Real>
void layernorm_forward(Real* out, Real* mean, Real* rstd, const Real* inp, const Real* weight,
                       const Real* bias, int N, int C);
// out = LayerNorm(inp) from mean and rstd saved by layernorm_forward: the same
// values as the forward wrote, bit for bit (activation recomputation).
template <typename Real>
void layernorm_apply(Real* out, const Real* inp, const Real* weight, const Real* bias,
                     const Real* mean, const Real* rstd, int N, int C);
template <typename Real>
void layernorm_backward(Real* dinp, Real* dweight, Real* dbias, const Real* dout, const Real* inp,
                        const Real* weight, const Real* mean, const Real* rstd, int N, int C);

// ---- matmul: out[N,OC] = inp[N,IC] @ weight[OC,IC]^T (+ bias[OC]) ------------
// bias may be null.
template <typename Real>
void matmul_forward(Real* out, const Real* inp, const Real* weight, const nondeduced_t<Real>* bias,
                    int N, int IC, int OC);
// dinp[N,IC] += s dout @ weight; dweight[OC,IC] += s dout^T @ inp; dbias += s
// sum_n dout, s = scale. dinp and dbias may be null (skipped).
template <typename Real>
void matmul_backward(nondeduced_t<Real>* dinp, Real* dweight, nondeduced_t<Real>* dbias,
                     const Real* dout, const Real* inp, const Real* weight, int N, int IC, int OC,
                     nondeduced_t<Real> scale = Real(1));

// ---- causal grouped-query self-attention (Llama; GPT-2 is NKV == NH) --------
// NH query heads and NKV key/value heads of D channels each; NKV divides NH and
// query head h reads key/value head h / (NH/NKV). Scale 1/sqrt(D).
// qkv: [B,T,(NH+2*NKV)*D], each position laid out as (q: NH*D | k: NKV*D |
// v: NKV*D), heads contiguous inside each part (Hugging Face's q_proj, k_proj
// and v_proj outputs side by side). att: [B,NH,T,T] post-softmax
// probabilities (saved for backward; entries above the diagonal are written as
// 0). out: [B,T,NH*D].
template <typename Real>
void gqa_attention_forward(Real* out, Real* att, const Real* qkv, int B, int T, int NH, int NKV,
                           int D);
// dqkv += d/dqkv (dk and dv summed over the NH/NKV query heads of each group).
// scratch must hold B*NH*T*T elements (overwritten).
template <typename Real>
void gqa_attention_backward(Real* dqkv, Real* scratch, const Real* dout, const Real* qkv,
                            const Real* att, int B, int T, int NH, int NKV, int D);

// ---- causal multi-head self-attention (GPT-2) --------------------------------
// gqa_attention_* with NKV = NH and D = C/NH: qkv [B,T,3C] laid out as
// (q | k | v), each C = NH heads x hs channels; att [B,NH,T,T]; out [B,T,C].
template <typename Real>
void attention_forward(Real* out, Real* att, const Real* qkv, int B, int T, int C, int NH);
// dqkv += d/dqkv. scratch must hold B*NH*T*T elements (overwritten).
template <typename Real>
void attention_backward(Real* dqkv, Real* scratch, const Real* dout, const Real* qkv,
                        const Real* att, int B, int T, int C, int NH);

// ---- RMSNorm over the last dimension (Llama), no bias -----------------------
// out = inp / sqrt(mean(inp^2) + eps) * weight; the per-row reciprocal rms
// (length N) is saved in rrms for the backward pass.
template <typename Real>
void rmsnorm_forward(Real* out, Real* rrms, const Real* inp, const Real* weight, int N, int C,
                     nondeduced_t<Real> eps);
// out = RMSNorm(inp) from rrms saved by rmsnorm_forward: the same values as the
// forward wrote, bit for bit (activation recomputation).
template <typename Real>
void rmsnorm_apply(Real* out, const Real* inp, const Real* weight, const Real* rrms, int N, int C);
// Accumulates into dinp and dweight. Bit-identical for any thread count.
template <typename Real>
void rmsnorm_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp,
                      const Real* weight, const Real* rrms, int N, int C);

// ---- rotary position embedding, Hugging Face rotate-half convention ---------
// For head size D (even), channel i < D/2 pairs with i + D/2 and turns by the
// angle pos * inv_freq[i], inv_freq[i] = theta^(-2i/D):
//   out[i]       = x[i] cos - x[i+D/2] sin
//   out[i+D/2]   = x[i+D/2] cos + x[i] sin
// (Hugging Face LlamaForCausalLM; Meta's original checkpoints pair (2i, 2i+1)
// and are converted to this convention by permuting the q and k weights.)
struct RopeParams {
  double theta = 10000.0;
  // Llama 3 frequency scaling (config.json rope_scaling with rope_type
  // "llama3"), applied to inv_freq as transformers' _compute_llama3_parameters
  // does: with wavelen = 2 pi / inv_freq, wavelengths under
  // original_max_position / high_freq_factor keep their frequency, those over
  // original_max_position / low_freq_factor are divided by factor, and the band
  // between is interpolated with smooth = (original_max_position / wavelen -
  // low_freq_factor) / (high_freq_factor - low_freq_factor):
  //   (1 - smooth) * inv_freq / factor + smooth * inv_freq.
  // Preconditions (checked where the configuration is read): factor > 0,
  // high_freq_factor > low_freq_factor > 0, original_max_position > 0.
  bool llama3 = false;
  double factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  double original_max_position = 8192.0;
};
// inv_freq[0, D/2), in double (scaling applied). The attention scale is not
// changed by llama3 scaling (its attention_factor is 1).
void rope_inv_freq(double* inv_freq, int D, const RopeParams& p);
// cos and sin [T, D/2] for the positions pos0 .. pos0+T-1: entry (t, i) =
// cos / sin((pos0 + t) * inv_freq[i]), computed in double and rounded once to
// Real. (transformers forms inv_freq and the angles in fp32, so its table
// differs from this one by that rounding, which grows with the position.)
template <typename Real>
void rope_table(Real* cos, Real* sin, int pos0, int T, int D, const RopeParams& p);
// Rotates H heads of D channels at every position of inp, laid out as
// [B, T, ld] with head h of position (b, t) at ((b*T + t)*ld + h*D): the
// attention's qkv buffer with H = NH + NKV rotates q and k in one call and
// leaves v alone (ld = (NH + 2*NKV)*D). Position t uses table row t. out has
// the same layout and may be inp (in place); channels outside the H heads of
// out are not written.
template <typename Real>
void rope_forward(Real* out, const Real* inp, const Real* cos, const Real* sin, int B, int T, int H,
                  int D, int ld);
// dinp += rotation of dout by -angle (the transpose of the forward). dinp may be
// dout: then the gradient is rotated in place (dinp = R^T dout) instead of
// accumulated, which is what a model that ran the forward in place needs.
template <typename Real>
void rope_backward(Real* dinp, const Real* dout, const Real* cos, const Real* sin, int B, int T,
                   int H, int D, int ld);

// ---- SwiGLU: out = silu(gate) * up, silu(g) = g * sigmoid(g) ----------------
// gate_up: [N, 2I], each row (gate: I | up: I) (one matmul with the gate_proj
// and up_proj weights stacked produces it); out: [N, I]. Any I >= 1.
template <typename Real> void swiglu_forward(Real* out, const Real* gate_up, int N, int I);
// dgate_up += d/dgate_up, same layout as gate_up.
template <typename Real>
void swiglu_backward(Real* dgate_up, const Real* dout, const Real* gate_up, int N, int I);

// ---- GeLU, tanh approximation ----------------------------------------------
template <typename Real> void gelu_forward(Real* out, const Real* inp, std::size_t n);
// dinp += gelu'(inp) * dout
template <typename Real>
void gelu_backward(Real* dinp, const Real* inp, const Real* dout, std::size_t n);

// ---- residual: out = a + b -------------------------------------------------
template <typename Real>
void residual_forward(Real* out, const Real* a, const Real* b, std::size_t n);
// da += dout; db += dout
template <typename Real>
void residual_backward(Real* da, Real* db, const Real* dout, std::size_t n);

// ---- fused classifier: softmax + cross-entropy + its gradient ---------------
// logits: [N,Vp]; only the first V columns are real tokens, the padding
// columns get probability 0. losses[n] = -log softmax(logits[n])[target[n]].
// If dlogits is non-null, dlogits[n,:] = (softmax - onehot) * dloss (padding
// columns set to 0); dlogits may alias logits (computed in place).
// Returns nothing; a target outside [0,V) is the caller's error to check.
template <typename Real>
void classifier_forward_backward(Real* losses, nondeduced_t<Real>* dlogits, const Real* logits,
                                 const int* targets, int N, int V, int Vp,
                                 nondeduced_t<Real> dloss);

// ---- AdamW (decoupled weight decay, bias-corrected moments) -----------------
// step t starts at 1. The caller picks weight_decay per tensor (the optimizer
// decays matrices and embeddings, not biases or LayerNorm parameters).
struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay;
  int t;
};
template <typename Real>
void adamw_update(Real* params, const Real* grads, Real* m, Real* v, std::size_t n,
                  const AdamWParams& p);

// ---- global gradient norm --------------------------------------------------
// sum of squares in double, deterministic for a given thread count.
template <typename Real> double sum_squares(const Real* x, std::size_t n);
// x *= s
template <typename Real> void scale_inplace(Real* x, std::size_t n, nondeduced_t<Real> s);

} // namespace myelin::cpu
