// The op interface of Myelin's CUDA backend (namespace myelin::cuda): the same
// GPT-2 and Llama ops as kernels/ops.h, on device buffers, with the stream passed
// explicitly. Every op is a template over the storage type T of activations
// and parameters, instantiated for T = float and T = __nv_bfloat16 only; math
// is always fp32. Parameter GRADIENTS are always fp32 (float*), whatever T is.
//
// Conventions (they differ from the CPU interface where noted, for speed):
//  * parameter gradients (dwte, dwpe, dweight, dbias) ACCUMULATE (+=), as on CPU;
//  * activation gradients: layernorm/rmsnorm_backward and residual_backward
//    ACCUMULATE into dinp (the residual stream); matmul, attention, gelu,
//    swiglu and rope backward OVERWRITE dinp (the CPU versions accumulate);
//  * attention keeps no T x T matrix: forward saves the per-row logsumexp
//    (float [B,NH,T]); backward recomputes probabilities;
//  * the classifier writes dlogits in place over the logits;
//  * reductions are deterministic (fixed partitions, fixed-order sums, no
//    float atomics): the same inputs give bit-identical outputs run to run.
// Functions only enqueue work; errors in arguments throw std::invalid_argument,
// CUDA/cuBLAS failures throw std::runtime_error.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace myelin::cuda {

// ---- encoder: out[b,t,:] = wte[tok[b,t],:] + wpe[t,:] (wpe may be null: wte only) ----------
template <typename T>
void encoder_forward(T* out, const int* tokens, const T* wte, const T* wpe, int B, int Tn, int C,
                     cudaStream_t s);

// Deterministic encoder backward needs the positions grouped by token;
// positions inside a bucket are in increasing order. Built on the host from the
// host copy of the tokens (build_encoder_buckets), or on the device
// (build_encoder_buckets_device).
struct EncoderBuckets {
  std::vector<int> tokens;    // [num_buckets] distinct token ids
  std::vector<int> offsets;   // [num_buckets + 1] into positions
  std::vector<int> positions; // [N] flat positions b*T + t
  int num_buckets() const { return static_cast<int>(tokens.size()); }
};
void build_encoder_buckets(const int* tokens, int N, EncoderBuckets& out);

// The same grouping on the device, from device tokens [N], with no host
// synchronisation: a bitonic sort of the keys (token << 32 | position) (unique,
// so the order is fully determined), then one block that marks and numbers the
// bucket starts. Writes bucket_tokens [N] and bucket_offsets [N + 1] with the
// first num_buckets (+ 1) entries as build_encoder_buckets gives them and every
// offset past them equal to N (empty buckets, which encoder_backward skips), so
// encoder_backward can be called with num_buckets = N without reading the count
// back; bucket_positions [N]. scratch: encoder_buckets_scratch(N) keys.
std::size_t encoder_buckets_scratch(int N);
void build_encoder_buckets_device(int* bucket_tokens, int* bucket_offsets, int* bucket_positions,
                                  const int* tokens, int N, unsigned long long* scratch,
                                  cudaStream_t s);

// dwte[tok] += sum of dout rows of that token; dwpe[t] += sum_b dout[b,t].
// Either gradient may be null. Bucket arrays are device copies of EncoderBuckets
// (or build_encoder_buckets_device's); buckets with an empty range are skipped.
template <typename T>
void encoder_backward(float* dwte, float* dwpe, const T* dout, const int* bucket_tokens,
                      const int* bucket_offsets, const int* bucket_positions, int num_buckets,
                      int B, int Tn, int C, cudaStream_t s);

// ---- LayerNorm over C (eps 1e-5); mean/rstd [N] may be null ---------------------------------
template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, int N, int C, cudaStream_t s);
// residual = a + b (rounded to T), then out = LayerNorm(residual). Fused.
template <typename T>
void residual_layernorm_forward(T* residual, T* out, float* mean, float* rstd, const T* a,
                                const T* b, const T* weight, const T* bias, int N, int C,
                                cudaStream_t s);
// out = LayerNorm(inp) from the mean/rstd a forward saved: bit-identical to
// that forward's output (activation recomputation).
template <typename T>
void layernorm_apply(T* out, const T* inp, const T* weight, const T* bias, const float* mean,
                     const float* rstd, int N, int C, cudaStream_t s);
// dinp += ..., dweight += ..., dbias += ... ; scratch: layernorm_backward_scratch(N, C) floats.
// C <= 4096.
std::size_t layernorm_backward_scratch(int N, int C);
template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp,
                        const T* weight, const float* mean, const float* rstd, int N, int C,
                        float* scratch, cudaStream_t s);

// ---- RMSNorm over C (Llama), eps from the caller; rrms [N] = 1/sqrt(mean(x^2) + eps) ---------
// out = x * rrms * weight; rrms may be null. C <= 8192 for the backward.
template <typename T>
void rmsnorm_forward(T* out, float* rrms, const T* inp, const T* weight, int N, int C, float eps,
                     cudaStream_t s);
// residual = a + b (rounded to T), then out = RMSNorm(residual). Fused.
template <typename T>
void residual_rmsnorm_forward(T* residual, T* out, float* rrms, const T* a, const T* b,
                              const T* weight, int N, int C, float eps, cudaStream_t s);
// out = RMSNorm(inp) from the saved rrms: bit-identical to the forward's output.
template <typename T>
void rmsnorm_apply(T* out, const T* inp, const T* weight, const float* rrms, int N, int C,
                   cudaStream_t s);
// dinp += ..., dweight += ... ; scratch: rmsnorm_backward_scratch(N, C) floats.
std::size_t rmsnorm_backward_scratch(int N, int C);
template <typename T>
void rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight,
                      const float* rrms, int N, int C, float* scratch, cudaStream_t s);

// ---- rotary position embedding, rotate-half, on H heads of D channels at row stride ld ------
// cos/sin [T, D/2] (fp32, cpu::rope_table). out == inp allowed.
template <typename T>
void rope_forward(T* out, const T* inp, const float* cos, const float* sin, int B, int Tn, int H,
                  int D, int ld, cudaStream_t s);
// dinp = R^T dout (overwritten; dinp == dout allowed).
template <typename T>
void rope_backward(T* dinp, const T* dout, const float* cos, const float* sin, int B, int Tn, int H,
                   int D, int ld, cudaStream_t s);

// ---- SwiGLU on a fused (gate | up) buffer [N, 2I]: out[N, I] = silu(gate) * up -----------------
template <typename T> void swiglu_forward(T* out, const T* gate_up, int N, int I, cudaStream_t s);
// dgate_up (overwritten) from dout [N, I].
template <typename T>
void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int I, cudaStream_t s);

// ---- matmul through cuBLASLt (fp32 compute; no TF32) -----------------------------------------
// One context per stream: it owns the cuBLASLt handle, a workspace and a cache
// of chosen algorithms. Not thread-safe.
class MatmulContext {
 public:
  explicit MatmulContext(std::size_t workspace_bytes = std::size_t(32) << 20);
  ~MatmulContext();
  MatmulContext(const MatmulContext&) = delete;
  MatmulContext& operator=(const MatmulContext&) = delete;
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// out[N,OC] = inp[N,IC] @ weight[OC,IC]^T (+ bias[OC]); bias may be null.
// gelu: out = gelu(that), and if pre_gelu is non-null it receives the
// pre-activation (for the fused backward). Uses cuBLASLt epilogues when
// possible (BIAS, GELU_BIAS, GELU_AUX_BIAS), separate kernels otherwise.
// cuBLASLt documents its GELU epilogue as the tanh approximation without an
// accuracy figure; the GPU test allows the documented error of the hardware
// tanh (tanh.approx.f32, PTX ISA) on top of the storage type's tolerance (the
// engine fuses by default in bf16 with --recompute 0 only: see cuda_backend.h).
template <typename T>
void matmul_forward(MatmulContext& ctx, T* out, T* pre_gelu, const T* inp, const T* weight,
                    const T* bias, int N, int IC, int OC, bool gelu, cudaStream_t s);
// dinp[N,IC]    = scale * dout @ weight          (overwritten; skipped if null),
//                 times gelu'(pre_gelu) elementwise if pre_gelu is non-null;
// dweight[OC,IC] += scale * dout^T @ inp         (fp32; skipped if null);
// dbias[OC]     += scale * sum_n dout[n,:]       (fp32; skipped if null;
//                 scratch: matmul_dbias_scratch(N, OC) floats; from the BGRADB
//                 epilogue of the dweight matmul when scale == 1 and cuBLASLt
//                 offers it, else a separate deterministic reduction).
std::size_t matmul_dbias_scratch(int N, int OC);
template <typename T>
void matmul_backward(MatmulContext& ctx, T* dinp, float* dweight, float* dbias, const T* dout,
                     const T* inp, const T* weight, const T* pre_gelu, int N, int IC, int OC,
                     float scale, float* scratch, cudaStream_t s);
// out[N,OC] += bias[OC] (helper, also used as the fallback of the bias epilogue).
template <typename T> void add_bias(T* out, const T* bias, int N, int OC, cudaStream_t s);
// Generic column-major GEMM for the benchmark's roofline reference:
// D[m,n] = A[k,m]^T B[k,n] (all T, fp32 compute), workspace from ctx.
template <typename T>
void gemm_tn(MatmulContext& ctx, T* D, const T* A, const T* B, int m, int n, int k, cudaStream_t s);

// ---- causal grouped-query attention, flash style -----------------------------------------------
// qkv [B,T,(NH+2*NKV)*D] = (q: NH heads | k: NKV heads | v: NKV heads) of D
// channels, NKV dividing NH, query head h reading kv head h / (NH/NKV) (GPT-2:
// NKV = NH, D = C/NH); out [B,T,NH*D]; lse [B,NH,T] (float) = logsumexp of the
// scaled scores (scale 1/sqrt(D)) of each query row.
// Specialised for D = 64 and 128; any other D <= 256 takes a generic path.
template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, int B, int Tn, int NH, int NKV, int D,
                       cudaStream_t s);
// dqkv (overwritten; dk, dv summed over each kv head's query heads) from
// dout = d(out). scratch: B*NH*T floats.
template <typename T>
void attention_backward(T* dqkv, float* scratch, const T* dout, const T* qkv, const T* out,
                        const float* lse, int B, int Tn, int NH, int NKV, int D, cudaStream_t s);
// Tensor-core versions, FlashAttention-2 style (mma.sync bf16, fp32 accumulators;
// kernels/cuda/attention_fa2.cu), with grouped-query attention: qkv [B,T,(NH+2*NKV)*D]
// = (q: NH*D | k: NKV*D | v: NKV*D), query head h reads kv head h/(NH/NKV),
// out [B,T,NH*D], dqkv like qkv (dK/dV of a kv head summed over its query heads).
// bf16 storage only, head size D = 64 or 128, NKV dividing NH, pointers 16-byte
// aligned. lse [B,NH,T] and scratch (B*NH*T floats) as in attention_forward /
// attention_backward above, so the backward of either may consume the forward
// of the other. Deterministic. Unsupported shapes throw std::invalid_argument.
bool attention_tc_supported(int NH, int NKV, int D);
void attention_forward_tc(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int Tn,
                          int NH, int NKV, int D, cudaStream_t s);
void attention_backward_tc(__nv_bfloat16* dqkv, float* scratch, const __nv_bfloat16* dout,
                           const __nv_bfloat16* qkv, const __nv_bfloat16* out, const float* lse,
                           int B, int Tn, int NH, int NKV, int D, cudaStream_t s);

// ---- GeLU (tanh approximation); in place allowed (out == inp, dinp == dout) ----------------
template <typename T> void gelu_forward(T* out, const T* inp, std::size_t n, cudaStream_t s);
// dinp = gelu'(inp) * dout (overwritten)
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, std::size_t n, cudaStream_t s);

// ---- residual and small elementwise helpers
// ------------------------------------------------------
template <typename T>
void residual_forward(T* out, const T* a, const T* b, std::size_t n, cudaStream_t s);
// da += dout; db += dout (either may be null)
template <typename T>
void residual_backward(T* da, T* db, const T* dout, std::size_t n, cudaStream_t s);
// dst = (Dst) src, rounding to nearest for bf16.
template <typename Dst, typename Src>
void convert(Dst* dst, const Src* src, std::size_t n, cudaStream_t s);

// Deterministic pseudo-random fill, uniform in [lo, hi) and never exactly 0
// (benchmark and test inputs; hash of (seed, index)).
template <typename T>
void fill_uniform(T* x, std::size_t n, std::uint32_t seed, float lo, float hi, cudaStream_t s);

// ---- fused classifier
// ---------------------------------------------------------------------------- logits [N,Vp] (first
// V columns real). losses[n] = logsumexp(logits[n,:V]) - logits[n,target]. If write_dlogits,
// logits[n,:] is overwritten with (softmax - onehot) * dloss (padding columns 0). One read pass +
// one read/write pass; no probabilities buffer. A target outside [0,V) gives NaN.
template <typename T>
void classifier_forward_backward(float* losses, T* logits, const int* targets, int N, int V, int Vp,
                                 float dloss, bool write_dlogits, cudaStream_t s);

// ---- AdamW
// ----------------------------------------------------------------------------------------- fp32
// master weights and moments. For T = float, master may be null: params is then the master copy.
// For T = bf16, master must be non-null and params gets the updated master rounded to bf16
// (nearest, or stochastic when seed != 0).
// The scalars of one step: learning rate, bias corrections c = 1 / (1 - beta^t)
// (computed in double, rounded once, like the CPU backend) and the rounding seed.
struct AdamWScalars {
  float lr, c1, c2;
  std::uint32_t seed;
};
struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay;
  int t;                  // step, >= 1
  std::uint32_t seed = 0; // 0: round to nearest; else stochastic rounding
  // Flat index of element 0 (stochastic rounding hashes seed and index_base + i,
  // so that tensors updated by separate calls get independent noise).
  std::uint64_t index_base = 0;
  // When set, the kernel reads lr, the corrections and the seed from here
  // (device memory: a captured update then uses each step's values), not
  // from lr, t and seed above.
  const AdamWScalars* scalars = nullptr;
};
AdamWScalars adamw_scalars(const AdamWArgs& a);
template <typename T>
void adamw_update(T* params, float* master, const float* grads, float* m, float* v, std::size_t n,
                  const AdamWArgs& a, cudaStream_t s);

// ---- global norm
// ------------------------------------------------------------------------------------ *out (device
// double) = sum x^2, accumulated in double over a fixed partition (kSumSquaresBlocks partial sums,
// reduced in fixed order): deterministic and independent of the GPU model. scratch:
// kSumSquaresBlocks doubles.
inline constexpr int kSumSquaresBlocks = 1024;
template <typename T>
void sum_squares(double* out, const T* x, std::size_t n, double* scratch, cudaStream_t s);
// x *= scale
template <typename T> void scale_inplace(T* x, std::size_t n, float scale, cudaStream_t s);
// *out (+)= parts[0] + parts[1] + ... + parts[k-1], added one by one in this
// order (as a host loop would): one thread.
void sum_in_order(double* out, const double* parts, int k, bool accumulate, cudaStream_t s);
// Gradient clipping without reading the norm back: norm = float(sqrt(*sumsq));
// when max_norm > 0 and norm > max_norm, x *= max_norm / norm (float), else x
// is left alone; the same arithmetic as the host's.
void clip_by_norm(float* x, std::size_t n, const double* sumsq, float max_norm, cudaStream_t s);
// *acc += (float)(sum of losses[0..N) / N), the sum in double over a fixed
// tree (one block): a micro-batch's mean loss added to a step's sum on the device.
void accumulate_mean_loss(double* acc, const float* losses, int N, cudaStream_t s);

} // namespace myelin::cuda
