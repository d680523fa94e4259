// The CUDA backend of the model (contract: runtime/model/backend.h): device
// memory, one non-blocking stream per engine, and the kernels of
// kernels/cuda/ (ops_cuda.h), whose conventions already match the backend's
// (parameter gradients accumulate; matmul, attention, GeLU, SwiGLU and RoPE
// backward write; norm backward adds into the residual stream's gradient).
//
// Storage type T is float or bf16. Device limits of the kernels are checked
// at construction (channels, head size, batch x heads).
//
// GeLU fusion: the GPT-2 MLP's GeLU runs in the cuBLASLt GELU_AUX_BIAS
// (forward) and DGELU (backward) epilogues by default in bf16 with
// --recompute 0. Tolerance: cuBLASLt documents the tanh
// GeLU without an accuracy figure; the least accurate tanh it may use is the
// hardware's (PTX tanh.approx.f32, max relative error 2^-11), so the fused
// GeLU may differ by up to 0.5 |x| 2^-11 (and gelu' by (0.5 + |x| u') 2^-11,
// see tests/gpu/test_cuda_ops.cpp): below half a bf16 ulp (2^-9 relative),
// within the bf16 tolerance, but above fp32's, so fp32 keeps the separate
// kernels unless MYELIN_CUDA_GELU_FUSION=1. With --recompute >= 1 it is off:
// the recomputation from the stored fch by the GeLU kernel would differ from
// the epilogue's GeLU, and --recompute is bit-identical to --recompute 0
// without fusion. MYELIN_CUDA_GELU_FUSION=0 turns it off (1 on, also fp32).
// Other environment switches (off by default): MYELIN_CUDA_ATTN=fma runs
// attention on the CUDA-core kernels even where the tensor-core ones apply
// (bf16, head size 64 or 128, any kv-head count; the default there);
// MYELIN_CUDA_SR=<seed> writes bf16 parameters with stochastic rounding.
//
// Graphs: the device work of each forward, backward, clipping and AdamW call
// runs as a CUDA graph from the second call with the same key on
// (ModelEngine::device_work); a backward with a hook between layers, one
// graph per layer.
// MYELIN_CUDA_GRAPHS=0 launches every kernel from the host instead.
//
// Host synchronisation: uploads of up to one micro-batch of ints (tokens,
// targets) are staged through a ring of page-locked buffers and never block;
// the embedding backward's token grouping is built on the device; the step
// scalars (loss sum, gradient norm, clipping) stay on the device. Only
// download() and sync() wait for the device.
#pragma once

#include <array>
#include <cstdlib>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "runtime/model/backend.h"
#include "runtime/model/config.h"
#include "runtime/model/engine.h"
#include "runtime/util/error.h"

namespace myelin {

namespace cuda_backend_detail {
// An on/off switch from the environment: unset or empty gives `fallback`,
// "0" off, "1" on; any other value is an input error naming the variable.
inline bool env_switch(const char* name, bool fallback) {
  const char* e = std::getenv(name);
  const std::string v = e ? e : "";
  if (v.empty()) return fallback;
  if (v != "0" && v != "1")
    throw InputError(std::string(name) + ": expected 0 or 1, got '" + v + "'");
  return v == "1";
}

// Selects the device before any other member allocates on it.
struct DeviceGuard {
  int index;
  explicit DeviceGuard(int idx) : index(idx) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      cudaGetLastError();
      throw std::runtime_error("--device cuda: no CUDA device is available");
    }
    if (idx < 0 || idx >= n)
      throw std::invalid_argument("--device-index: " + std::to_string(idx) + " is not in [0, " +
                                  std::to_string(n) + ")");
    MYELIN_CUDA_CHECK(cudaSetDevice(idx));
  }
};

// Page-locked host memory (RAII).
class PinnedBytes {
 public:
  PinnedBytes() = default;
  PinnedBytes(const PinnedBytes&) = delete;
  PinnedBytes& operator=(const PinnedBytes&) = delete;
  ~PinnedBytes() {
    if (p_) cudaFreeHost(p_);
  }
  void allocate(std::size_t bytes) {
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    MYELIN_CUDA_CHECK(cudaMallocHost(&p_, bytes));
    bytes_ = bytes;
  }
  void* get() const { return p_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

// One page-locked staging buffer of the upload ring and the event after the
// copy that last read it.
struct Staging {
  PinnedBytes host;
  cuda::Event done;
  bool used = false;
};
} // namespace cuda_backend_detail

template <typename TT> class CudaBackend {
 public:
  using T = TT;
  // Device memory, zeroed on allocation.
  template <class U> class Buffer {
   public:
    // Zeroed on the legacy stream, which the engine's non-blocking stream
    // does not wait for: the device is synchronised before the buffer is used.
    void allocate(std::size_t n) {
      b_.allocate(n);
      if (n) {
        MYELIN_CUDA_CHECK(cudaMemset(b_.get(), 0, b_.bytes()));
        MYELIN_CUDA_CHECK(cudaDeviceSynchronize());
      }
    }
    U* get() const { return b_.get(); }
    std::size_t size() const { return b_.size(); }
    std::size_t bytes() const { return b_.bytes(); }

   private:
    cuda::DeviceBuffer<U> b_;
  };

  CudaBackend(const ModelConfig& cfg, int maxB, int maxT, const EngineOptions& opt)
      : guard_(opt.device_index) {
    const int C = cfg.channels, NH = cfg.num_heads, D = cfg.head_dim();
    const int max_c = cfg.llama() ? 8192 : 4096; // RMSNorm / LayerNorm kernels
    require(C <= max_c, "--device cuda",
            "channels must be <= " + std::to_string(max_c) + ", got " + std::to_string(C));
    require(D <= 256, "--device cuda",
            "head size (channels / heads) must be <= 256, got " + std::to_string(D));
    require(std::size_t(maxB) * NH <= 65535, "--batch-size",
            "batch x heads must be <= 65535 on cuda, got " + std::to_string(maxB) + " x " +
                std::to_string(NH));
    if (opt.dtype != (std::is_same_v<T, float> ? "fp32" : "bf16"))
      throw std::logic_error("cuda backend: dtype does not match the storage type");
    gelu_fusion_ =
        cuda_backend_detail::env_switch("MYELIN_CUDA_GELU_FUSION", !std::is_same_v<T, float>) &&
        opt.recompute == 0;
    graphs_ = cuda_backend_detail::env_switch("MYELIN_CUDA_GRAPHS", true);
    if (const char* sr = std::getenv("MYELIN_CUDA_SR"))
      sr_seed_ = std::uint32_t(std::strtoul(sr, nullptr, 10));
    if constexpr (!std::is_same_v<T, float>) {
      const char* attn = std::getenv("MYELIN_CUDA_ATTN");
      const std::string want = attn ? attn : "";
      if (!want.empty() && want != "fma" && want != "tc")
        throw InputError("MYELIN_CUDA_ATTN: expected fma or tc, got '" + want + "'");
      attn_tc_ = want != "fma" && cuda::attention_tc_supported(NH, cfg.kv_heads(), D);
    }
    cudaDeviceProp prop{};
    MYELIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device_index));
    name_ = "cuda:" + std::to_string(opt.device_index) + " (" + prop.name + ", " +
            (std::is_same_v<T, float> ? "fp32" : "bf16") + ")";
    // Dense peak of the tensor cores used by the matmuls (bf16; fp32 runs on
    // CUDA cores), from the data sheets of the cards we know.
    const std::string dev = prop.name;
    const bool bf16 = !std::is_same_v<T, float>;
    if (dev.find("H100") != std::string::npos || dev.find("H200") != std::string::npos ||
        dev.find("GH200") != std::string::npos)
      peak_ = bf16 ? (dev.find("PCIe") != std::string::npos ? 756e12 : 989e12) : 67e12;
    else if (dev.find("A100") != std::string::npos)
      peak_ = bf16 ? 312e12 : 19.5e12;
    const int N = maxB * maxT;
    if (cfg.llama())
      norm_scratch_.allocate(cuda::rmsnorm_backward_scratch(N, C));
    else
      norm_scratch_.allocate(cuda::layernorm_backward_scratch(N, C));
    bias_scratch_.allocate(
        cuda::matmul_dbias_scratch(N, std::max(cfg.fc_width(), cfg.qkv_width())));
    sum_scratch_.allocate(cuda::kSumSquaresBlocks);
    sum_out_.allocate(kNumParamTensors);
    update_scalars_.allocate(1);
    bucket_keys_.allocate(cuda::encoder_buckets_scratch(N));
    for (auto& s : staging_) s.host.allocate(std::size_t(N) * sizeof(int));
    download_.allocate(std::size_t(N) * sizeof(int));
  }
  ~CudaBackend() {
    cudaSetDevice(guard_.index);
    cudaStreamSynchronize(stream_.get());
  }

  std::string name() const { return name_; }
  bool on_device() const { return true; }
  void* stream() const { return stream_.get(); }
  double peak_flops() const { return peak_; }
  void sync() { stream_.sync(); }
  std::size_t scratch_bytes() const {
    return norm_scratch_.bytes() + bias_scratch_.bytes() + sum_scratch_.bytes() + sum_out_.bytes() +
           update_scalars_.bytes() + bucket_keys_.bytes() +
           (std::size_t(32) << 20); // cuBLASLt workspace
  }

  // ---- memory -----------------------------------------------------------------------------
  template <class U> void zero(U* p, std::size_t n) {
    if (n) MYELIN_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(U), st()));
  }
  // Up to a micro-batch of ints: copied into the next page-locked staging
  // buffer of a ring, whence the device copies it asynchronously (a buffer is
  // reused once its previous copy has completed: the host waits only if it
  // runs a whole ring ahead of the device). Larger: from pageable memory,
  // staged by the driver before the call returns (it may block).
  template <class U> void upload(U* dst, const U* host, std::size_t n) {
    if (!n) return;
    const std::size_t bytes = n * sizeof(U);
    if (bytes > download_.bytes()) {
      MYELIN_CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, st()));
      return;
    }
    cuda_backend_detail::Staging& s = staging_[next_staging_];
    next_staging_ = (next_staging_ + 1) % staging_.size();
    if (s.used) {
      const cudaError_t q = cudaEventQuery(s.done.get());
      if (q == cudaErrorNotReady)
        MYELIN_CUDA_CHECK(cudaEventSynchronize(s.done.get()));
      else
        MYELIN_CUDA_CHECK(q);
    }
    std::memcpy(s.host.get(), host, bytes);
    MYELIN_CUDA_CHECK(cudaMemcpyAsync(dst, s.host.get(), bytes, cudaMemcpyHostToDevice, st()));
    s.done.record(st());
    s.used = true;
  }
  // Waits for the device (one synchronisation); small copies land in a
  // page-locked buffer first.
  template <class U> void download(U* host, const U* src, std::size_t n) {
    if (!n) return;
    const std::size_t bytes = n * sizeof(U);
    if (bytes > download_.bytes()) {
      MYELIN_CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, st()));
      stream_.sync();
      return;
    }
    MYELIN_CUDA_CHECK(cudaMemcpyAsync(download_.get(), src, bytes, cudaMemcpyDeviceToHost, st()));
    stream_.sync();
    std::memcpy(host, download_.get(), bytes);
  }
  template <class D, class S> void convert(D* dst, const S* src, std::size_t n) {
    if (n) cuda::convert<D, S>(dst, src, n, st());
  }

  // ---- graphs (GraphBackend) ----------------------------------------------------------------
  using Graph = cuda::Graph;
  bool graphs() const { return graphs_; }
  template <class F> Graph capture(F&& queue) { return Graph::capture(st(), queue); }
  void launch(const Graph& g) { g.launch(st()); }

  // ---- embedding ----------------------------------------------------------------------------
  void encoder_forward(T* out, const int* tokens, const T* wte, const T* wpe, int B, int Tn,
                       int C) {
    cuda::encoder_forward<T>(out, tokens, wte, wpe, B, Tn, C, st());
  }
  // index (3N + 1 ints): distinct ids [N], offsets [N + 1], positions [N],
  // built on the device; the backward visits N buckets, the empty ones past
  // the last distinct id cost nothing but their launch.
  int index_tokens(int* index, const int* tokens, const int*, int N) {
    cuda::build_encoder_buckets_device(index, index + N, index + 2 * std::size_t(N) + 1, tokens, N,
                                       bucket_keys_.get(), st());
    return N;
  }
  void encoder_backward(float* dwte, float* dwpe, const T* dout, const int*, const int* index,
                        int count, int B, int Tn, int C, int) {
    const std::size_t N = std::size_t(B) * Tn;
    cuda::encoder_backward<T>(dwte, dwpe, dout, index, index + N, index + 2 * N + 1, count, B, Tn,
                              C, st());
  }

  // ---- norms and residual -------------------------------------------------------------------
  void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b,
                         int N, int C) {
    cuda::layernorm_forward<T>(out, mean, rstd, inp, w, b, N, C, st());
  }
  void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* w, int N, int C, float eps) {
    cuda::rmsnorm_forward<T>(out, rstd, inp, w, N, C, eps, st());
  }
  void residual_layernorm_forward(T* res, T* out, float* mean, float* rstd, const T* a, const T* b,
                                  const T* w, const T* bias, int N, int C) {
    cuda::residual_layernorm_forward<T>(res, out, mean, rstd, a, b, w, bias, N, C, st());
  }
  void residual_rmsnorm_forward(T* res, T* out, float* rstd, const T* a, const T* b, const T* w,
                                int N, int C, float eps) {
    cuda::residual_rmsnorm_forward<T>(res, out, rstd, a, b, w, N, C, eps, st());
  }
  void layernorm_apply(T* out, const T* inp, const T* w, const T* b, const float* mean,
                       const float* rstd, int N, int C) {
    cuda::layernorm_apply<T>(out, inp, w, b, mean, rstd, N, C, st());
  }
  void rmsnorm_apply(T* out, const T* inp, const T* w, const float* rstd, int N, int C) {
    cuda::rmsnorm_apply<T>(out, inp, w, rstd, N, C, st());
  }
  void layernorm_backward(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w,
                          const float* mean, const float* rstd, int N, int C) {
    cuda::layernorm_backward<T>(dinp, dw, db, dout, inp, w, mean, rstd, N, C, norm_scratch_.get(),
                                st());
  }
  void rmsnorm_backward(T* dinp, float* dw, const T* dout, const T* inp, const T* w,
                        const float* rstd, int N, int C) {
    cuda::rmsnorm_backward<T>(dinp, dw, dout, inp, w, rstd, N, C, norm_scratch_.get(), st());
  }
  void residual_forward(T* out, const T* a, const T* b, std::size_t n) {
    cuda::residual_forward<T>(out, a, b, n, st());
  }

  // ---- matmuls and MLP ----------------------------------------------------------------------
  void matmul_forward(T* out, const T* inp, const T* w, const T* bias, int N, int IC, int OC) {
    cuda::matmul_forward<T>(mm_, out, nullptr, inp, w, bias, N, IC, OC, false, st());
  }
  void matmul_backward(T* dinp, float* dw, float* db, const T* dout, const T* inp, const T* w,
                       int N, int IC, int OC, float scale) {
    cuda::matmul_backward<T>(mm_, dinp, dw, db, dout, inp, w, nullptr, N, IC, OC, scale,
                             bias_scratch_.get(), st());
  }
  void fc_gelu_forward(T* pre, T* act, const T* inp, const T* w, const T* b, int N, int IC,
                       int OC) {
    if (gelu_fusion_) {
      cuda::matmul_forward<T>(mm_, act, pre, inp, w, b, N, IC, OC, true, st());
    } else {
      cuda::matmul_forward<T>(mm_, pre, nullptr, inp, w, b, N, IC, OC, false, st());
      cuda::gelu_forward<T>(act, pre, std::size_t(N) * OC, st());
    }
  }
  void gelu_forward(T* out, const T* inp, std::size_t n) {
    cuda::gelu_forward<T>(out, inp, n, st());
  }
  void fcproj_gelu_backward(T* dpre, T* dact, float* dw, float* db, const T* dout, const T* act,
                            const T* w, const T* pre, int N, int IC, int OC) {
    if (gelu_fusion_) {
      cuda::matmul_backward<T>(mm_, dpre, dw, db, dout, act, w, pre, N, IC, OC, 1.0f,
                               bias_scratch_.get(), st());
    } else {
      matmul_backward(dact, dw, db, dout, act, w, N, IC, OC, 1.0f);
      cuda::gelu_backward<T>(dpre, pre, dact, std::size_t(N) * IC, st());
    }
  }
  void swiglu_forward(T* out, const T* gate_up, int N, int I) {
    cuda::swiglu_forward<T>(out, gate_up, N, I, st());
  }
  void swiglu_backward(T* dgate_up, const T* dout, const T* gate_up, int N, int I) {
    cuda::swiglu_backward<T>(dgate_up, dout, gate_up, N, I, st());
  }

  // ---- attention ----------------------------------------------------------------------------
  void rope_forward(T* x, const float* cos, const float* sin, int B, int Tn, int H, int D, int ld) {
    cuda::rope_forward<T>(x, x, cos, sin, B, Tn, H, D, ld, st());
  }
  void rope_backward(T* dx, const float* cos, const float* sin, int B, int Tn, int H, int D,
                     int ld) {
    cuda::rope_backward<T>(dx, dx, cos, sin, B, Tn, H, D, ld, st());
  }
  // state: the row logsumexp [B, NH, T]; scratch: B*NH*T floats.
  void attention_forward(T* out, float* lse, const T* qkv, int B, int Tn, int NH, int NKV, int D) {
    if constexpr (!std::is_same_v<T, float>) {
      if (attn_tc_) return cuda::attention_forward_tc(out, lse, qkv, B, Tn, NH, NKV, D, st());
    }
    cuda::attention_forward<T>(out, lse, qkv, B, Tn, NH, NKV, D, st());
  }
  void attention_backward(T* dqkv, float* scratch, const T* dout, const T* qkv, const T* out,
                          const float* lse, int B, int Tn, int NH, int NKV, int D) {
    if constexpr (!std::is_same_v<T, float>) {
      if (attn_tc_)
        return cuda::attention_backward_tc(dqkv, scratch, dout, qkv, out, lse, B, Tn, NH, NKV, D,
                                           st());
    }
    cuda::attention_backward<T>(dqkv, scratch, dout, qkv, out, lse, B, Tn, NH, NKV, D, st());
  }

  // ---- loss ---------------------------------------------------------------------------------
  void classifier(float* losses, T* logits, const int* targets, int N, int V, int Vp,
                  bool write_dlogits) {
    cuda::classifier_forward_backward<T>(losses, logits, targets, N, V, Vp, 1.0f / float(N),
                                         write_dlogits, st());
  }

  // ---- optimizer ----------------------------------------------------------------------------
  // The step's scalars go to device memory (through the upload ring), where
  // every adamw() until the next call reads them: a captured update then
  // uses each step's learning rate, corrections and seed.
  void update_scalars(const UpdateArgs& a) {
    cuda::AdamWArgs args{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.t, 0, 0};
    if (sr_seed_ != 0) args.seed = ((sr_seed_ * 2654435761u) ^ (std::uint32_t(a.t) * 40503u)) | 1u;
    const cuda::AdamWScalars sc = cuda::adamw_scalars(args);
    upload(update_scalars_.get(), &sc, 1);
  }
  void adamw(T* lowp, float* master, const float* grads, float* m, float* v, std::size_t n,
             const UpdateArgs& a) {
    cuda::AdamWArgs args{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.t, 0, a.index_base};
    args.scalars = update_scalars_.get();
    if constexpr (std::is_same_v<T, float>)
      cuda::adamw_update<float>(master, nullptr, grads, m, v, n, args, st());
    else
      cuda::adamw_update<T>(lowp, master, grads, m, v, n, args, st());
  }
  // One partial sum per range on the device, one copy to the host.
  double sum_squares(std::span<const FloatRange> ranges) {
    std::vector<double> host;
    for (std::size_t i = 0; i < ranges.size(); i += sum_out_.size()) {
      const std::size_t k = std::min(sum_out_.size(), ranges.size() - i);
      for (std::size_t j = 0; j < k; ++j)
        cuda::sum_squares<float>(sum_out_.get() + j, ranges[i + j].data, ranges[i + j].count,
                                 sum_scratch_.get(), st());
      const std::size_t at = host.size();
      host.resize(at + k);
      download(host.data() + at, sum_out_.get(), k);
    }
    double sum = 0.0;
    for (double x : host) sum += x;
    return sum;
  }
  void scale(float* x, std::size_t n, float s) { cuda::scale_inplace<float>(x, n, s, st()); }

  // ---- step scalars, on the device ----------------------------------------------------------
  // The same partial sums as sum_squares, added in the same order on the device.
  void sum_squares_into(double* out, std::span<const FloatRange> ranges) {
    if (ranges.empty()) return zero(out, 1);
    for (std::size_t i = 0; i < ranges.size(); i += sum_out_.size()) {
      const std::size_t k = std::min(sum_out_.size(), ranges.size() - i);
      for (std::size_t j = 0; j < k; ++j)
        cuda::sum_squares<float>(sum_out_.get() + j, ranges[i + j].data, ranges[i + j].count,
                                 sum_scratch_.get(), st());
      cuda::sum_in_order(out, sum_out_.get(), int(k), i > 0, st());
    }
  }
  void clip_by_norm(float* x, std::size_t n, const double* sumsq, float max_norm) {
    cuda::clip_by_norm(x, n, sumsq, max_norm, st());
  }
  void accumulate_mean_loss(double* acc, const float* losses, int N) {
    cuda::accumulate_mean_loss(acc, losses, N, st());
  }

 private:
  cudaStream_t st() const { return stream_.get(); }

  cuda_backend_detail::DeviceGuard guard_; // first: selects the device for everything below
  cuda::Stream stream_;
  cuda::MatmulContext mm_;
  std::string name_;
  double peak_ = 0.0;
  bool gelu_fusion_ = false, attn_tc_ = false, graphs_ = true;
  std::uint32_t sr_seed_ = 0;
  cuda::DeviceBuffer<float> norm_scratch_, bias_scratch_;
  cuda::DeviceBuffer<double> sum_scratch_, sum_out_;
  cuda::DeviceBuffer<cuda::AdamWScalars> update_scalars_; // update_scalars()
  cuda::DeviceBuffer<unsigned long long> bucket_keys_;    // index_tokens' sort keys
  std::array<cuda_backend_detail::Staging, 4> staging_;   // upload ring (tokens, targets)
  std::size_t next_staging_ = 0;
  cuda_backend_detail::PinnedBytes download_; // small downloads land here
};

static_assert(ModelBackend<CudaBackend<float>> && GraphBackend<CudaBackend<float>>);

} // namespace myelin
