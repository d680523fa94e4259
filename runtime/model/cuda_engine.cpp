// CUDA engine: a GPT-2 stage (or whole model) on one GPU, driven through the
// Engine interface, built from the kernels in kernels/cuda/.
//
// Storage type T is float (dtype fp32) or bf16 (dtype bf16). In both cases the
// engine keeps fp32 master parameters (params(), get/set_params), fp32 gradients
// and fp32 AdamW moments; for bf16 a bf16 copy of the parameters feeds the
// kernels and is refreshed by every AdamW step (params_changed() refreshes it
// after an external write to params()). Activations and activation gradients
// are T; LayerNorm statistics and the attention logsumexp are fp32.
//
// Memory is allocated once at construction, in the sizes of
// plan_cuda_memory() (runtime/model/memory_plan.h): parameters, gradients,
// moments, `slots` activation arenas (one per micro-batch in flight) sized for
// max_B x max_T, and one set of backward scratch buffers shared by the slots.
//
// Per layer the forward stores ln1, qkv, atty, res2, ln2, fch, fch_gelu, res3
// (16 x B*T*C elements) plus fp32 statistics; the residual add is fused with
// the following LayerNorm (ln2, the next layer's ln1, or lnf). With recompute
// 1, fch_gelu goes to one shared buffer and the backward recomputes it from
// fch; with recompute 2, ln1 and ln2 also share one buffer and the backward
// recomputes them from their inputs and the saved mean/rstd. The classifier
// runs in the forward when targets are given: it writes losses and, in place
// of the logits, dlogits for a unit d(mean loss); backward(dloss) folds dloss
// into the alpha of the classifier-matmul backward, so nothing re-reads logits.
//
// Environment switches (off by default): MYELIN_CUDA_GELU_FUSION=1 uses the
// cuBLASLt GELU / DGELU epilogues for the MLP (ignored with recompute >= 1);
// MYELIN_CUDA_ATTN=fma runs attention on the CUDA-core kernels even where the
// tensor-core ones apply (bf16, head size 64 or 128; the default there);
// MYELIN_CUDA_SR=<seed> writes bf16 parameters with stochastic rounding.
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "runtime/model/engine.h"
#include "runtime/model/memory_plan.h"
#include "runtime/util/error.h"

namespace myelin {

namespace {

namespace cu = myelin::cuda;
using cu::DeviceBuffer;

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
  void bind() const { MYELIN_CUDA_CHECK(cudaSetDevice(index)); }
};

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

template <typename T> class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelConfig& cfg, const StageSpec& st, int maxB, int maxT,
             const EngineOptions& opt)
      : guard_(opt.device_index), cfg_(cfg), st_(st), lay_(cfg), maxB_(maxB), maxT_(maxT),
        recompute_(opt.recompute) {
    cfg_.validate();
    const int C = cfg_.channels, NH = cfg_.num_heads, L = cfg_.num_layers;
    if (st_.layer_begin < 0 || st_.layer_end < st_.layer_begin || st_.layer_end > L)
      throw std::invalid_argument("stage: layer range outside the model");
    if (maxB <= 0 || maxT <= 0 || maxT > cfg_.max_seq_len)
      throw std::invalid_argument(
          "engine: max batch/sequence must be positive and T <= max_seq_len");
    // Limits of the CUDA kernels on the model's shape and the micro-batch.
    require(C <= 4096, "--device cuda", "channels must be <= 4096, got " + std::to_string(C));
    require(C / NH <= 256, "--device cuda",
            "head size (channels / heads) must be <= 256, got " + std::to_string(C / NH));
    require(std::size_t(maxB) * NH <= 65535, "--batch-size",
            "batch x heads must be <= 65535 on cuda, got " + std::to_string(maxB) + " x " +
                std::to_string(NH));
    if (opt.slots < 1) throw std::invalid_argument("engine: slots must be >= 1");
    // The GELU epilogue computes GeLU from the unrounded accumulator; a
    // recomputation from the stored (rounded) fch would differ in the last bits,
    // so recomputation uses the separate GeLU kernel in both passes.
    gelu_fusion_ = env_flag("MYELIN_CUDA_GELU_FUSION") && opt.recompute == 0;
    if (const char* sr = std::getenv("MYELIN_CUDA_SR"))
      sr_seed_ = std::uint32_t(std::strtoul(sr, nullptr, 10));
    if constexpr (!std::is_same<T, float>::value) {
      const char* attn = std::getenv("MYELIN_CUDA_ATTN");
      const std::string want = attn ? attn : "";
      if (!want.empty() && want != "fma" && want != "tc")
        throw InputError("MYELIN_CUDA_ATTN: expected fma or tc, got '" + want + "'");
      attn_tc_ = want != "fma" && cu::attention_tc_supported(C, NH);
    }

    cudaDeviceProp prop{};
    MYELIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device_index));
    name_ = "cuda:" + std::to_string(opt.device_index) + " (" + prop.name + ", " +
            (std::is_same<T, float>::value ? "fp32" : "bf16") + ")";
    // Dense peak of the tensor cores used by the matmuls (bf16; fp32 runs on
    // CUDA cores), from the data sheets of the cards we know.
    const std::string dev = prop.name;
    const bool bf16 = !std::is_same<T, float>::value;
    if (dev.find("H100") != std::string::npos || dev.find("H200") != std::string::npos ||
        dev.find("GH200") != std::string::npos)
      peak_ = bf16 ? (dev.find("PCIe") != std::string::npos ? 756e12 : 989e12) : 67e12;
    else if (dev.find("A100") != std::string::npos)
      peak_ = bf16 ? 312e12 : 19.5e12;

    const std::size_t P = lay_.total;
    master_.allocate(P);
    if constexpr (!std::is_same<T, float>::value) params_lp_.allocate(P);
    grads_.allocate(P);
    m_.allocate(P);
    v_.allocate(P);
    MYELIN_CUDA_CHECK(cudaMemset(master_.get(), 0, P * sizeof(float)));
    if (params_lp_.get()) MYELIN_CUDA_CHECK(cudaMemset(params_lp_.get(), 0, P * sizeof(T)));
    MYELIN_CUDA_CHECK(cudaMemset(grads_.get(), 0, P * sizeof(float)));
    MYELIN_CUDA_CHECK(cudaMemset(m_.get(), 0, P * sizeof(float)));
    MYELIN_CUDA_CHECK(cudaMemset(v_.get(), 0, P * sizeof(float)));
    opt_end_ = P;

    plan_ = plan_cuda_memory(cfg_, st_, maxB, maxT, opt.dtype, opt.recompute, opt.slots);
    const SlotSizes& z = plan_.slot;
    slots_.resize(std::size_t(opt.slots));
    for (Slot& s : slots_) {
      s.x0.allocate(z.x0);
      s.ln1.allocate(z.ln1);
      s.qkv.allocate(z.qkv);
      s.atty.allocate(z.atty);
      s.res2.allocate(z.res2);
      s.ln2.allocate(z.ln2);
      s.fch.allocate(z.fch);
      s.fch_gelu.allocate(z.fch_gelu);
      s.res3.allocate(z.res3);
      for (auto* b : {&s.ln1_mean, &s.ln1_rstd, &s.ln2_mean, &s.ln2_rstd}) b->allocate(z.ln_stat);
      s.lse.allocate(z.lse);
      for (auto* b : {&s.tokens, &s.btok, &s.bpos}) b->allocate(z.tokens);
      s.boff.allocate(z.boff);
      s.in_act.allocate(z.io);
      s.in_grad.allocate(z.io);
      s.lnf.allocate(z.lnf);
      s.lnf_mean.allocate(z.lnf_stat);
      s.lnf_rstd.allocate(z.lnf_stat);
      s.logits.allocate(z.logits);
      s.losses.allocate(z.losses);
      s.targets.allocate(z.targets);
      s.out_act.allocate(z.out_io);
      s.out_grad.allocate(z.out_io);
    }
    const SharedSizes& h = plan_.shared;
    dres_.allocate(h.dres);
    dln_.allocate(h.dln);
    proj_.allocate(h.proj);
    datty_.allocate(h.datty);
    dqkv_.allocate(h.dqkv);
    dfch_.allocate(h.dfch);
    gelu_rc_.allocate(h.gelu);
    ln_rc_.allocate(h.ln);
    attn_scratch_.allocate(h.attn);
    row_logits_.allocate(h.row_logits);
    row_logits_f32_.allocate(h.row_logits);
    const std::size_t N = std::size_t(maxB) * maxT;
    ln_scratch_.allocate(cu::layernorm_backward_scratch(int(N), C));
    bias_scratch_.allocate(cu::matmul_dbias_scratch(int(N), 4 * C));
    norm_scratch_.allocate(cu::kSumSquaresBlocks);
    norm_out_.allocate(kNumParamTensors);
    MYELIN_CUDA_CHECK(cudaDeviceSynchronize());
  }

  ~CudaEngine() override {
    cudaSetDevice(guard_.index);
    cudaStreamSynchronize(stream_.get());
  }

  const ModelConfig& config() const override { return cfg_; }
  const StageSpec& stage() const override { return st_; }
  const ParamLayout& layout() const override { return lay_; }
  double peak_flops() const override { return peak_; }
  void* device_stream() const override { return stream_.get(); }
  std::string device_name() const override { return name_; }
  int max_batch() const override { return maxB_; }
  int max_seq() const override { return maxT_; }
  MemoryUse memory_use() const override {
    MemoryUse u;
    u.params = master_.bytes() + params_lp_.bytes();
    u.grads = grads_.bytes();
    u.optimizer = m_.bytes() + v_.bytes();
    u.activations = plan_.activations;
    u.scratch = plan_.scratch + ln_scratch_.bytes() + bias_scratch_.bytes() +
                norm_scratch_.bytes() + norm_out_.bytes();
    return u;
  }

  // ---- parameters and optimizer state --------------------------------------------------
  void get_params(std::span<float> out) const override { download(master_, out); }
  void set_params(std::span<const float> in) override {
    upload(in, master_);
    refresh_low_precision();
  }
  void get_moments(std::span<float> m, std::span<float> v) const override {
    download(m_, m);
    download(v_, v);
  }
  void set_moments(std::span<const float> m, std::span<const float> v) override {
    upload(m, m_);
    upload(v, v_);
  }
  BufferView params() override { return {master_.get(), lay_.total, DType::kF32, true}; }
  void params_changed() override { refresh_low_precision(); }
  BufferView grads() override { return {grads_.get(), lay_.total, DType::kF32, true}; }

  // ---- forward / backward -----------------------------------------------------------------
  float forward(int slot, const int* tokens, const int* targets, int B, int Tn) override {
    return run_forward(slot, tokens, targets, B, Tn, /*want_grad=*/true);
  }

  float eval_loss(const int* tokens, const int* targets, int B, int Tn) override {
    if (!(st_.first && st_.last)) throw std::logic_error("eval_loss needs a whole-model engine");
    if (!targets) throw std::invalid_argument("eval_loss: targets are required");
    return run_forward(0, tokens, targets, B, Tn, /*want_grad=*/false);
  }

  void backward(int slot, float dloss) override {
    guard_.bind();
    Slot& s = slots_.at(std::size_t(slot));
    const int B = s.B, Tn = s.Tn, C = cfg_.channels, N = B * Tn;
    if (N == 0) throw std::logic_error("backward: no forward in this slot");
    const std::size_t NC = std::size_t(N) * C;
    const cudaStream_t st = stream_.get();
    const int nl = nlayers();
    T* dres = dres_.get();
    T* dln = dln_.get();
    if (st_.last) {
      if (!s.have_dlogits)
        throw std::logic_error("backward: the last forward in this slot had no targets");
      const T* x_last = nl > 0 ? s.res3.get() + std::size_t(nl - 1) * NC : s.x0.get();
      // dlogits hold (softmax - onehot) / N; dloss scales the whole backward here.
      cu::matmul_backward<T>(mm_, dln, G(kWte), nullptr, s.logits.get(), s.lnf.get(), P(kWte),
                             nullptr, N, C, cfg_.padded_vocab_size, dloss, nullptr, st);
      MYELIN_CUDA_CHECK(cudaMemsetAsync(dres, 0, NC * sizeof(T), st));
      cu::layernorm_backward<T>(dres, G(kLnfw), G(kLnfb), dln, x_last, P(kLnfw), s.lnf_mean.get(),
                                s.lnf_rstd.get(), N, C, ln_scratch_.get(), st);
      s.have_dlogits = false; // consumed
    } else {
      cu::convert<T, float>(dres, s.out_grad.get(), NC, st);
    }
    float* bsc = bias_scratch_.get();
    for (int i = nl - 1; i >= 0; --i) {
      const int l = st_.layer_begin + i;
      const LayerActs a = acts(s, i, N);
      const T* x_in = i == 0 ? s.x0.get() : s.res3.get() + std::size_t(i - 1) * NC;
      if (recompute_ >= 1) cu::gelu_forward<T>(a.fch_gelu, a.fch, NC * 4, st);
      // MLP: dres = d(res3) = d(fcproj out); the residual passes it to res2 unchanged.
      cu::matmul_backward<T>(mm_, dfch_.get(), G(kFcprojw, l), G(kFcprojb, l), dres, a.fch_gelu,
                             L(kFcprojw, l), gelu_fusion_ ? a.fch : nullptr, N, 4 * C, C, 1.0f, bsc,
                             st);
      if (!gelu_fusion_) cu::gelu_backward<T>(dfch_.get(), a.fch, dfch_.get(), NC * 4, st);
      if (recompute_ >= 2)
        cu::layernorm_apply<T>(a.ln2, a.res2, L(kLn2w, l), L(kLn2b, l), a.ln2_mean, a.ln2_rstd, N,
                               C, st);
      cu::matmul_backward<T>(mm_, dln, G(kFcw, l), G(kFcb, l), dfch_.get(), a.ln2, L(kFcw, l),
                             nullptr, N, C, 4 * C, 1.0f, bsc, st);
      cu::layernorm_backward<T>(dres, G(kLn2w, l), G(kLn2b, l), dln, a.res2, L(kLn2w, l),
                                a.ln2_mean, a.ln2_rstd, N, C, ln_scratch_.get(), st);
      // Attention: dres = d(res2) = d(attproj out).
      cu::matmul_backward<T>(mm_, datty_.get(), G(kAttprojw, l), G(kAttprojb, l), dres, a.atty,
                             L(kAttprojw, l), nullptr, N, C, C, 1.0f, bsc, st);
      attention_backward(dqkv_.get(), datty_.get(), a, B, Tn, st);
      if (recompute_ >= 2)
        cu::layernorm_apply<T>(a.ln1, x_in, L(kLn1w, l), L(kLn1b, l), a.ln1_mean, a.ln1_rstd, N, C,
                               st);
      cu::matmul_backward<T>(mm_, dln, G(kQkvw, l), G(kQkvb, l), dqkv_.get(), a.ln1, L(kQkvw, l),
                             nullptr, N, C, 3 * C, 1.0f, bsc, st);
      cu::layernorm_backward<T>(dres, G(kLn1w, l), G(kLn1b, l), dln, x_in, L(kLn1w, l), a.ln1_mean,
                                a.ln1_rstd, N, C, ln_scratch_.get(), st);
      if (hook_) {
        stream_.sync(); // layer l's gradients are in memory before the hook sees them
        hook_(l);
      }
    }
    if (st_.first) {
      cu::encoder_backward<T>(G(kWte), G(kWpe), dres, s.btok.get(), s.boff.get(), s.bpos.get(),
                              s.nbuckets, B, Tn, C, st);
    } else {
      cu::convert<float, T>(s.in_grad.get(), dres, NC, st);
    }
    stream_.sync(); // gradients and input_grad are complete when backward returns
  }

  // ---- activation exchange (fp32 device buffers) -------------------------------------------
  BufferView output_act(int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    if (st_.last) return {};
    const std::size_t n = s.B ? std::size_t(s.B) * s.Tn * cfg_.channels : s.out_act.size();
    return {s.out_act.get(), n, DType::kF32, true};
  }
  BufferView input_act(int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    return {s.in_act.get(), s.in_act.size(), DType::kF32, true};
  }
  BufferView output_grad(int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    return {s.out_grad.get(), s.out_grad.size(), DType::kF32, true};
  }
  BufferView input_grad(int slot) override {
    Slot& s = slots_.at(std::size_t(slot));
    return {s.in_grad.get(), s.in_grad.size(), DType::kF32, true};
  }

  void last_logits(int position, std::span<float> out) override {
    guard_.bind();
    if (!st_.last) throw std::logic_error("last_logits: not the last stage");
    const Slot& s = slots_.at(0);
    const std::size_t Vp = std::size_t(cfg_.padded_vocab_size);
    if (out.size() < Vp || position < 0 || position >= s.Tn)
      throw std::out_of_range("last_logits: bad position or buffer");
    // The logits buffer may hold dlogits by now: recompute the one row from lnf.
    const cudaStream_t st = stream_.get();
    cu::matmul_forward<T>(mm_, row_logits_.get(), nullptr,
                          s.lnf.get() + std::size_t(position) * cfg_.channels, P(kWte), nullptr, 1,
                          cfg_.channels, int(Vp), false, st);
    cu::convert<float, T>(row_logits_f32_.get(), row_logits_.get(), Vp, st);
    MYELIN_CUDA_CHECK(cudaMemcpyAsync(out.data(), row_logits_f32_.get(), Vp * sizeof(float),
                                      cudaMemcpyDeviceToHost, st));
    stream_.sync();
  }

  // ---- gradients and update ----------------------------------------------------------------
  void set_backward_hook(std::function<void(int)> hook) override { hook_ = std::move(hook); }

  void shard_optimizer(std::size_t begin, std::size_t end) override {
    guard_.bind();
    if (begin > end || end > lay_.total) throw std::invalid_argument("shard_optimizer: bad range");
    stream_.sync();
    opt_begin_ = begin;
    opt_end_ = end;
    m_.allocate(end - begin);
    v_.allocate(end - begin);
    if (end > begin) {
      MYELIN_CUDA_CHECK(cudaMemsetAsync(m_.get(), 0, m_.bytes(), stream_.get()));
      MYELIN_CUDA_CHECK(cudaMemsetAsync(v_.get(), 0, v_.bytes(), stream_.get()));
      stream_.sync();
    }
  }
  std::pair<std::size_t, std::size_t> optimizer_range() const override {
    return {opt_begin_, opt_end_};
  }

  void zero_grad() override {
    guard_.bind();
    MYELIN_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, lay_.total * sizeof(float), stream_.get()));
  }

  double grad_sum_squares(std::size_t begin, std::size_t end) override {
    guard_.bind();
    int count = 0;
    for_owned(begin, end, /*for_norm=*/true, [&](std::size_t a, std::size_t b, int) {
      cu::sum_squares<float>(norm_out_.get() + count, grads_.get() + a, b - a, norm_scratch_.get(),
                             stream_.get());
      ++count;
    });
    if (count == 0) return 0.0;
    double host[kNumParamTensors];
    MYELIN_CUDA_CHECK(cudaMemcpyAsync(host, norm_out_.get(), sizeof(double) * count,
                                      cudaMemcpyDeviceToHost, stream_.get()));
    stream_.sync();
    double sum = 0.0;
    for (int i = 0; i < count; ++i) sum += host[i];
    return sum;
  }

  void scale_grads(float s) override {
    guard_.bind();
    cu::scale_inplace<float>(grads_.get(), lay_.total, s, stream_.get());
  }

  void adamw(const AdamWConfig& c, float lr, int t, std::size_t begin, std::size_t end) override {
    guard_.bind();
    for_owned(begin, end, /*for_norm=*/false, [&](std::size_t a, std::size_t b, int k) {
      if (a < opt_begin_ || b > opt_end_)
        throw std::logic_error("adamw range outside the optimizer shard");
      const std::size_t o = a - opt_begin_; // moments hold only the shard
      cu::AdamWArgs args{
          lr, c.beta1, c.beta2, c.eps, ParamLayout::decays(k) ? c.weight_decay : 0.0f, t, 0};
      if (sr_seed_ != 0) args.seed = ((sr_seed_ * 2654435761u) ^ (std::uint32_t(t) * 40503u)) | 1u;
      args.index_base = a; // rounding noise hashed on the flat index: independent across tensors
      if constexpr (std::is_same<T, float>::value) {
        cu::adamw_update<float>(master_.get() + a, nullptr, grads_.get() + a, m_.get() + o,
                                v_.get() + o, b - a, args, stream_.get());
      } else {
        cu::adamw_update<T>(params_lp_.get() + a, master_.get() + a, grads_.get() + a, m_.get() + o,
                            v_.get() + o, b - a, args, stream_.get());
      }
    });
    stream_.sync(); // params() is consistent when adamw returns
  }

 private:
  struct Slot {
    DeviceBuffer<T> x0, ln1, qkv, atty, res2, ln2, fch, fch_gelu, res3, lnf, logits;
    DeviceBuffer<float> ln1_mean, ln1_rstd, ln2_mean, ln2_rstd, lse, lnf_mean, lnf_rstd, losses;
    DeviceBuffer<float> in_act, out_act, in_grad, out_grad;
    DeviceBuffer<int> tokens, targets, btok, boff, bpos;
    int nbuckets = 0;
    int B = 0, Tn = 0;
    bool have_dlogits = false;
    std::vector<float> losses_host;
    cu::EncoderBuckets buckets;
  };
  // Pointers to local layer i of a slot for the current micro-batch of N rows;
  // recomputed activations point into the shared buffers.
  struct LayerActs {
    T *ln1, *qkv, *atty, *res2, *ln2, *fch, *fch_gelu, *res3;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *lse;
  };
  LayerActs acts(Slot& s, int i, int N) const {
    const std::size_t NC = std::size_t(N) * cfg_.channels, ii = std::size_t(i);
    const bool ln_rc = recompute_ >= 2, gelu_rc = recompute_ >= 1;
    return {ln_rc ? ln_rc_.get() : s.ln1.get() + ii * NC,
            s.qkv.get() + ii * 3 * NC,
            s.atty.get() + ii * NC,
            s.res2.get() + ii * NC,
            ln_rc ? ln_rc_.get() : s.ln2.get() + ii * NC,
            s.fch.get() + ii * 4 * NC,
            gelu_rc ? gelu_rc_.get() : s.fch_gelu.get() + ii * 4 * NC,
            s.res3.get() + ii * NC,
            s.ln1_mean.get() + ii * N,
            s.ln1_rstd.get() + ii * N,
            s.ln2_mean.get() + ii * N,
            s.ln2_rstd.get() + ii * N,
            s.lse.get() + ii * std::size_t(N) * cfg_.num_heads};
  }

  float run_forward(int slot, const int* tokens, const int* targets, int B, int Tn,
                    bool want_grad) {
    guard_.bind();
    if (B <= 0 || Tn <= 0 || B > maxB_ || Tn > maxT_)
      throw std::invalid_argument("micro-batch shape exceeds the engine's allocation");
    Slot& s = slots_.at(std::size_t(slot));
    const int C = cfg_.channels, N = B * Tn;
    const std::size_t NC = std::size_t(N) * C;
    const cudaStream_t st = stream_.get();
    s.B = B;
    s.Tn = Tn;
    s.have_dlogits = false;
    if (st_.first) {
      check_token_ids(tokens, std::size_t(N), cfg_.vocab_size, "forward: token");
      MYELIN_CUDA_CHECK(cudaMemcpyAsync(s.tokens.get(), tokens, std::size_t(N) * sizeof(int),
                                        cudaMemcpyHostToDevice, st));
      cu::build_encoder_buckets(tokens, N, s.buckets);
      s.nbuckets = s.buckets.num_buckets();
      MYELIN_CUDA_CHECK(cudaMemcpyAsync(s.btok.get(), s.buckets.tokens.data(),
                                        s.buckets.tokens.size() * sizeof(int),
                                        cudaMemcpyHostToDevice, st));
      MYELIN_CUDA_CHECK(cudaMemcpyAsync(s.boff.get(), s.buckets.offsets.data(),
                                        s.buckets.offsets.size() * sizeof(int),
                                        cudaMemcpyHostToDevice, st));
      MYELIN_CUDA_CHECK(cudaMemcpyAsync(s.bpos.get(), s.buckets.positions.data(),
                                        s.buckets.positions.size() * sizeof(int),
                                        cudaMemcpyHostToDevice, st));
      cu::encoder_forward<T>(s.x0.get(), s.tokens.get(), P(kWte), P(kWpe), B, Tn, C, st);
    } else {
      cu::convert<T, float>(s.x0.get(), s.in_act.get(), NC, st);
    }
    const int nl = nlayers();
    const T* x = s.x0.get();
    for (int i = 0; i < nl; ++i) {
      const int l = st_.layer_begin + i;
      const LayerActs a = acts(s, i, N);
      if (i == 0) // later layers get ln1 from the previous layer's fused residual + LN
        cu::layernorm_forward<T>(a.ln1, a.ln1_mean, a.ln1_rstd, x, L(kLn1w, l), L(kLn1b, l), N, C,
                                 st);
      cu::matmul_forward<T>(mm_, a.qkv, nullptr, a.ln1, L(kQkvw, l), L(kQkvb, l), N, C, 3 * C,
                            false, st);
      attention_forward(a, B, Tn, st);
      cu::matmul_forward<T>(mm_, proj_.get(), nullptr, a.atty, L(kAttprojw, l), L(kAttprojb, l), N,
                            C, C, false, st);
      cu::residual_layernorm_forward<T>(a.res2, a.ln2, a.ln2_mean, a.ln2_rstd, x, proj_.get(),
                                        L(kLn2w, l), L(kLn2b, l), N, C, st);
      if (gelu_fusion_) {
        cu::matmul_forward<T>(mm_, a.fch_gelu, a.fch, a.ln2, L(kFcw, l), L(kFcb, l), N, C, 4 * C,
                              true, st);
      } else {
        cu::matmul_forward<T>(mm_, a.fch, nullptr, a.ln2, L(kFcw, l), L(kFcb, l), N, C, 4 * C,
                              false, st);
        cu::gelu_forward<T>(a.fch_gelu, a.fch, NC * 4, st);
      }
      cu::matmul_forward<T>(mm_, proj_.get(), nullptr, a.fch_gelu, L(kFcprojw, l), L(kFcprojb, l),
                            N, 4 * C, C, false, st);
      if (i + 1 < nl) {
        const LayerActs nx = acts(s, i + 1, N);
        cu::residual_layernorm_forward<T>(a.res3, nx.ln1, nx.ln1_mean, nx.ln1_rstd, a.res2,
                                          proj_.get(), L(kLn1w, l + 1), L(kLn1b, l + 1), N, C, st);
      } else if (st_.last) {
        cu::residual_layernorm_forward<T>(a.res3, s.lnf.get(), s.lnf_mean.get(), s.lnf_rstd.get(),
                                          a.res2, proj_.get(), P(kLnfw), P(kLnfb), N, C, st);
      } else {
        cu::residual_forward<T>(a.res3, a.res2, proj_.get(), NC, st);
      }
      x = a.res3;
    }
    if (!st_.last) {
      cu::convert<float, T>(s.out_act.get(), x, NC, st);
      stream_.sync(); // output_act is ready when forward returns
      return 0.0f;
    }
    if (nl == 0)
      cu::layernorm_forward<T>(s.lnf.get(), s.lnf_mean.get(), s.lnf_rstd.get(), x, P(kLnfw),
                               P(kLnfb), N, C, st);
    const int V = cfg_.vocab_size, Vp = cfg_.padded_vocab_size;
    cu::matmul_forward<T>(mm_, s.logits.get(), nullptr, s.lnf.get(), P(kWte), nullptr, N, C, Vp,
                          false, st);
    if (!targets) {
      stream_.sync();
      return 0.0f;
    }
    check_token_ids(targets, std::size_t(N), V, "forward: target");
    MYELIN_CUDA_CHECK(cudaMemcpyAsync(s.targets.get(), targets, std::size_t(N) * sizeof(int),
                                      cudaMemcpyHostToDevice, st));
    cu::classifier_forward_backward<T>(s.losses.get(), s.logits.get(), s.targets.get(), N, V, Vp,
                                       1.0f / float(N), want_grad, st);
    s.have_dlogits = want_grad;
    s.losses_host.resize(std::size_t(N));
    MYELIN_CUDA_CHECK(cudaMemcpyAsync(s.losses_host.data(), s.losses.get(),
                                      std::size_t(N) * sizeof(float), cudaMemcpyDeviceToHost, st));
    stream_.sync();
    double sum = 0.0;
    for (float v : s.losses_host) sum += v;
    return static_cast<float>(sum / N);
  }

  int nlayers() const { return st_.layer_end - st_.layer_begin; }
  // Attention on tensor cores where they apply (bf16, hs 64/128), else CUDA cores.
  void attention_forward(const LayerActs& a, int B, int Tn, cudaStream_t st) {
    const int C = cfg_.channels, NH = cfg_.num_heads;
    if constexpr (!std::is_same<T, float>::value) {
      if (attn_tc_) return cu::attention_forward_tc(a.atty, a.lse, a.qkv, B, Tn, C, NH, st);
    }
    cu::attention_forward<T>(a.atty, a.lse, a.qkv, B, Tn, C, NH, st);
  }
  void attention_backward(T* dqkv, const T* datty, const LayerActs& a, int B, int Tn,
                          cudaStream_t st) {
    const int C = cfg_.channels, NH = cfg_.num_heads;
    if constexpr (!std::is_same<T, float>::value) {
      if (attn_tc_)
        return cu::attention_backward_tc(dqkv, attn_scratch_.get(), datty, a.qkv, a.atty, a.lse, B,
                                         Tn, C, NH, st);
    }
    cu::attention_backward<T>(dqkv, attn_scratch_.get(), datty, a.qkv, a.atty, a.lse, B, Tn, C, NH,
                              st);
  }
  // Parameters as the kernels see them (T), gradients (fp32).
  T* params_t() const {
    if constexpr (std::is_same<T, float>::value) {
      return master_.get();
    } else {
      return params_lp_.get();
    }
  }
  T* P(int k) const { return params_t() + lay_.offsets[k]; }
  T* L(int k, int l) const { return P(k) + lay_.per_layer(k, cfg_.num_layers) * std::size_t(l); }
  float* G(int k) const { return grads_.get() + lay_.offsets[k]; }
  float* G(int k, int l) const {
    return G(k) + lay_.per_layer(k, cfg_.num_layers) * std::size_t(l);
  }

  void refresh_low_precision() {
    guard_.bind();
    if constexpr (!std::is_same<T, float>::value) {
      cu::convert<T, float>(params_lp_.get(), master_.get(), lay_.total, stream_.get());
    }
    stream_.sync();
  }

  void download(const DeviceBuffer<float>& src, std::span<float> dst) const {
    guard_.bind();
    if (dst.size() != src.size()) throw std::invalid_argument("engine: buffer size mismatch");
    MYELIN_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    MYELIN_CUDA_CHECK(cudaMemcpy(dst.data(), src.get(), src.bytes(), cudaMemcpyDeviceToHost));
  }
  void upload(std::span<const float> src, DeviceBuffer<float>& dst) {
    guard_.bind();
    if (dst.size() != src.size()) throw std::invalid_argument("engine: buffer size mismatch");
    // On the engine's (non-blocking) stream: a plain cudaMemcpy from pageable
    // memory may return before the copy lands, and the legacy stream it runs on
    // does not order it before the kernels on stream_.
    MYELIN_CUDA_CHECK(
        cudaMemcpyAsync(dst.get(), src.data(), dst.bytes(), cudaMemcpyHostToDevice, stream_.get()));
    stream_.sync();
  }

  // Calls f(a, b, tensor) for each owned sub-range of [begin, end).
  template <class F> void for_owned(std::size_t begin, std::size_t end, bool for_norm, F&& f) {
    for (const auto& r : st_.owned_ranges(lay_, cfg_.num_layers, begin, end, for_norm))
      f(r.begin, r.end, r.tensor);
  }

  DeviceGuard guard_; // first: selects the device for everything below
  cu::Stream stream_;
  mutable cu::MatmulContext mm_;
  ModelConfig cfg_;
  StageSpec st_;
  ParamLayout lay_;
  int maxB_, maxT_;
  std::string name_;
  double peak_ = 0.0;
  int recompute_ = 0;
  CudaMemoryPlan plan_;
  bool gelu_fusion_ = false;
  std::uint32_t sr_seed_ = 0;
  bool attn_tc_ = false;
  std::function<void(int)> hook_;
  std::size_t opt_begin_ = 0, opt_end_ = 0; // AdamW moments cover [opt_begin_, opt_end_)
  DeviceBuffer<float> master_, grads_, m_, v_;
  DeviceBuffer<T> params_lp_; // bf16 copy (unused for fp32)
  std::vector<Slot> slots_;
  DeviceBuffer<T> dres_, dln_, proj_, datty_, dqkv_, dfch_, gelu_rc_, ln_rc_, row_logits_;
  DeviceBuffer<float> attn_scratch_, ln_scratch_, bias_scratch_, row_logits_f32_;
  DeviceBuffer<double> norm_scratch_, norm_out_;
};

} // namespace

std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& cfg, const StageSpec& stage, int max_B,
                                         int max_T, const EngineOptions& opt) {
  if (opt.dtype == "fp32")
    return std::make_unique<CudaEngine<float>>(cfg, stage, max_B, max_T, opt);
  if (opt.dtype == "bf16")
    return std::make_unique<CudaEngine<cu::bf16>>(cfg, stage, max_B, max_T, opt);
  throw std::invalid_argument("--dtype: expected fp32 or bf16, got '" + opt.dtype + "'");
}

} // namespace myelin
