// CUDA kernel benchmark. Method:
//  * limits: peak copy bandwidth = 2 x bytes / time of a 1 GiB device-to-device
//    cudaMemcpy (read + write), peak compute = a 8192^3 cuBLAS bf16 GEMM
//    (fp32 accumulate); both medians over the repetitions;
//  * each kernel: inputs filled with hashed uniform values (never zeros); per
//    repetition the L2 is flushed (memset of a buffer of 2 x L2 size), then the
//    kernel alone is timed with CUDA events; the median is reported;
//  * bytes and FLOPs come from each kernel's formula (see kernels/cuda/*.cu);
//    the kernel is called memory-bound when FLOPs/bytes is below the machine
//    balance (peak FLOP/s / peak B/s) and its share is achieved/peak of that limit;
//  * GPT-2 presets time the GPT-2 block's kernels; Llama presets (llama-135M,
//    llama-1B) the Llama block's: RMSNorm, RoPE, SwiGLU, grouped-query
//    attention with the preset's kv heads, unbiased matmuls and the head at
//    the preset's vocabulary;
//  * library column: the same GEMMs through plain cuBLAS (cublasGemmEx) for the
//    matmuls. Attention has no library column: cuDNN's fused attention needs the
//    cudnn-frontend graph API, which this build does not ship.
#include "runtime/bench/cuda_kernels_bench.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "runtime/model/config.h"
#include "runtime/util/error.h"

namespace myelin {

namespace {

namespace cu = myelin::cuda;
using cu::DeviceBuffer;

#define BENCH_CUBLAS_CHECK(expr) MYELIN_CUBLAS_CHECK(expr)

struct ModelShape {
  std::string name;
  int L, C, NH;
  ModelConfig cfg; // the whole preset (the Llama path reads kv heads, I, V, rope)
};

bool model_shape(const std::string& n, ModelShape& m) {
  ModelConfig c;
  if (!model_preset(n, c)) return false;
  m = {n, c.num_layers, c.channels, c.num_heads, c};
  return true;
}

struct Row {
  std::string model, kernel, shape;
  double ms = 0, bytes = 0, flops = 0;
  double lib_ms = -1;
  std::string lib;
};

class Timer {
 public:
  Timer(cudaStream_t s, std::size_t l2_bytes, int reps) : s_(s), reps_(reps) {
    flush_.allocate(std::max<std::size_t>(2 * l2_bytes, std::size_t(64) << 20));
  }
  // Median milliseconds of f() over the repetitions, L2 flushed before each.
  double time(const std::function<void()>& f) {
    f(); // warm-up (algorithm selection, first-touch)
    MYELIN_CUDA_CHECK(cudaStreamSynchronize(s_));
    std::vector<double> t;
    for (int r = 0; r < reps_; ++r) {
      MYELIN_CUDA_CHECK(cudaMemsetAsync(flush_.get(), r & 0xff, flush_.bytes(), s_));
      a_.record(s_);
      f();
      b_.record(s_);
      t.push_back(b_.since(a_));
    }
    std::sort(t.begin(), t.end());
    const std::size_t n = t.size();
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  }

 private:
  cudaStream_t s_;
  int reps_;
  DeviceBuffer<unsigned char> flush_;
  cu::Event a_, b_;
};

template <typename T> cudaDataType_t cuda_type() {
  return std::is_same<T, float>::value ? CUDA_R_32F : CUDA_R_16BF;
}

struct Limits {
  double bw = 0;    // bytes/s
  double flops = 0; // FLOP/s
};

template <typename T> class Bench {
 public:
  Bench(const CudaBenchOptions& o, cudaStream_t s, Timer& timer, cublasHandle_t blas,
        const Limits& lim)
      : o_(o), s_(s), timer_(timer), blas_(blas), lim_(lim), re_(o.filter) {}

  std::vector<Row> rows;

  void run_model(const ModelShape& m) {
    if (m.cfg.llama()) return run_llama(m);
    const int B = o_.batch, Tn = o_.seq, C = m.C, NH = m.NH, V = 50257, Vp = 50304;
    const std::size_t N = std::size_t(B) * Tn, NC = N * C;
    const double s = sizeof(T);
    std::uint32_t seed = 1;
    auto fill = [&](auto& buf, float lo = -1.0f, float hi = 1.0f) {
      cu::fill_uniform(buf.get(), buf.size(), seed++, lo, hi, s_);
    };
    DeviceBuffer<T> x(NC), y(NC), out(NC), dx(NC), qkv(3 * NC), dqkv(3 * NC), big(4 * NC),
        big2(4 * NC), big3(4 * NC), w(std::size_t(Vp) * C), bias(4 * std::size_t(C)), wln(C),
        bln(C);
    DeviceBuffer<float> dw(std::size_t(Vp) * C), dwpe(std::size_t(Tn) * C), db(4 * std::size_t(C)),
        dwln(C), dbln(C), mean(N), rstd(N), lse(N * NH), dsc(N * NH);
    DeviceBuffer<float> ln_scr(cu::layernorm_backward_scratch(int(N), C)),
        b_scr(cu::matmul_dbias_scratch(int(N), 4 * C));
    for (auto* b : {&x, &y, &out, &dx, &qkv, &dqkv, &big, &big2, &big3, &w, &bias}) fill(*b);
    fill(wln, 0.5f, 1.5f);
    fill(bln);
    for (auto* b : {&dw, &dwpe, &db, &dwln, &dbln}) fill(*b);
    fill(mean, -0.1f, 0.1f);
    fill(rstd, 0.5f, 2.0f);

    const Tokens tk(*this, N, V);

    const std::string bt = "B" + std::to_string(B) + " T" + std::to_string(Tn);
    const std::string sc = bt + " C" + std::to_string(C);

    // ---- embedding, layernorm, residual, gelu --------------------------------------------
    add(m, "encoder_fwd", sc, 3 * NC * s + 4.0 * N, double(NC),
        [&] { cu::encoder_forward(out.get(), tk.tok.get(), w.get(), x.get(), B, Tn, C, s_); });
    add(m, "encoder_bwd", sc, 2 * NC * s + (double(Tn) + tk.buckets) * C * 8.0, 2.0 * NC, [&] {
      cu::encoder_backward(dw.get(), dwpe.get(), x.get(), tk.btok.get(), tk.boff.get(),
                           tk.bpos.get(), tk.buckets, B, Tn, C, s_);
    });
    add(m, "layernorm_fwd", sc, 2 * NC * s + 2.0 * C * s + 8.0 * N, 8.0 * NC, [&] {
      cu::layernorm_forward(out.get(), mean.get(), rstd.get(), x.get(), wln.get(), bln.get(),
                            int(N), C, s_);
    });
    add(m, "residual_layernorm_fwd", sc, 4 * NC * s + 8.0 * N, 9.0 * NC, [&] {
      cu::residual_layernorm_forward(dx.get(), out.get(), mean.get(), rstd.get(), x.get(), y.get(),
                                     wln.get(), bln.get(), int(N), C, s_);
    });
    add(m, "layernorm_bwd", sc,
        4 * NC * s + 8.0 * N + 2.0 * double(cu::layernorm_backward_scratch(int(N), C)) * 4,
        12.0 * NC, [&] {
          cu::layernorm_backward(dx.get(), dwln.get(), dbln.get(), y.get(), x.get(), wln.get(),
                                 mean.get(), rstd.get(), int(N), C, ln_scr.get(), s_);
        });
    add(m, "residual_fwd", sc, 3 * NC * s, double(NC),
        [&] { cu::residual_forward(out.get(), x.get(), y.get(), NC, s_); });
    add(m, "gelu_fwd", bt + " 4C" + std::to_string(4 * C), 2 * 4 * NC * s, 10.0 * 4 * NC,
        [&] { cu::gelu_forward(big2.get(), big.get(), 4 * NC, s_); });
    add(m, "gelu_bwd", bt + " 4C" + std::to_string(4 * C), 3 * 4 * NC * s, 18.0 * 4 * NC,
        [&] { cu::gelu_backward(big2.get(), big.get(), big2.get(), 4 * NC, s_); });

    // ---- matmuls ---------------------------------------------------------------------------
    // Inputs/outputs sized per shape from the big buffers; lm_head uses its own.
    DeviceBuffer<T> logits(N * std::size_t(Vp));
    fill(logits, -4.0f, 4.0f);
    matmuls(m,
            {{"qkv", C, 3 * C, true},
             {"attproj", C, C, true},
             {"fc", C, 4 * C, true},
             {"fcproj", 4 * C, C, true},
             {"lm_head", C, Vp, false}},
            {big.get(), big2.get(), big3.get(), logits.get(), w.get(), bias.get(), dw.get(),
             db.get(), b_scr.get()});

    // ---- attention ---------------------------------------------------------------------------
    const int hs = C / NH;
    const double causal = double(B) * NH * (double(Tn) * (Tn + 1) / 2.0) * hs;
    const std::string ash = sc + " NH" + std::to_string(NH) + " hs" + std::to_string(hs);
    fill(qkv, -2.0f, 2.0f);
    add(m, "attention_fwd", ash, 4 * NC * s + 4.0 * N * NH, 4 * causal,
        [&] { cu::attention_forward(out.get(), lse.get(), qkv.get(), B, Tn, NH, NH, C / NH, s_); });
    // (a forward first so that lse/out are consistent)
    if (std::regex_search("attention_bwd", re_)) {
      cu::attention_forward(out.get(), lse.get(), qkv.get(), B, Tn, NH, NH, C / NH, s_);
    }
    add(m, "attention_bwd", ash, 8 * NC * s + 8.0 * N * NH, 10 * causal, [&] {
      cu::attention_backward(dqkv.get(), dsc.get(), y.get(), qkv.get(), out.get(), lse.get(), B, Tn,
                             NH, NH, C / NH, s_);
    });
    // Tensor-core versions (bf16 only, hs 64/128): same bytes and FLOP accounting.
    if constexpr (std::is_same<T, cu::bf16>::value) {
      const int D = C / NH; // multi-head: NKV = NH
      if (C % NH == 0 && cu::attention_tc_supported(NH, NH, D)) {
        add(m, "attention_tc_fwd", ash, 4 * NC * s + 4.0 * N * NH, 4 * causal, [&] {
          cu::attention_forward_tc(out.get(), lse.get(), qkv.get(), B, Tn, NH, NH, D, s_);
        });
        if (std::regex_search("attention_tc_bwd", re_)) {
          cu::attention_forward_tc(out.get(), lse.get(), qkv.get(), B, Tn, NH, NH, D, s_);
        }
        add(m, "attention_tc_bwd", ash, 8 * NC * s + 8.0 * N * NH, 10 * causal, [&] {
          cu::attention_backward_tc(dqkv.get(), dsc.get(), y.get(), qkv.get(), out.get(), lse.get(),
                                    B, Tn, NH, NH, D, s_);
        });
      }
    }

    // ---- classifier ---------------------------------------------------------------------------
    const double nv = double(N) * Vp;
    add(m, "classifier_fused", bt + " V" + std::to_string(V) + " Vp" + std::to_string(Vp),
        3 * nv * s + 8.0 * N, 5.0 * double(N) * V, [&] {
          // in place: the logits become dlogits; values stay bounded run to run
          cu::classifier_forward_backward(mean.get(), logits.get(), tk.tgt.get(), int(N), V, Vp,
                                          1.0f / float(N), true, s_);
        });

    // ---- optimizer over the whole model -------------------------------------------------------
    const std::size_t P = std::size_t(Vp) * C + std::size_t(1024) * C +
                          std::size_t(m.L) * (12ull * C * C + 13ull * C) + 2ull * C;
    optimizer(m, P);
  }

  struct MM {
    const char* name;
    int IC, OC;
    bool bias;
  };
  struct MMBuffers {
    T *in, *out, *dinp, *logits, *w, *bias;
    float *dw, *db, *bias_scratch;
  };
  // Forward and backward of each matmul (the "fc" one also with the GeLU
  // epilogue when `gelu_fc`), each beside plain cuBLAS. An OC equal to the
  // padded vocabulary writes to the logits buffer.
  void matmuls(const ModelShape& m, const std::vector<MM>& mms, const MMBuffers& b,
               bool gelu_fc = true) {
    const int B = o_.batch, Tn = o_.seq, Vp = m.cfg.padded_vocab_size;
    const std::size_t N = std::size_t(B) * Tn;
    const double s = sizeof(T);
    const std::string bt = "B" + std::to_string(B) + " T" + std::to_string(Tn);
    for (const MM& mm : mms) {
      const double n = double(N), ic = mm.IC, oc = mm.OC;
      T* o = mm.OC == Vp ? b.logits : b.out;
      T* in = b.in;
      const std::string shp = bt + " " + std::to_string(mm.IC) + "->" + std::to_string(mm.OC);
      const double fb = (n * ic + oc * ic + n * oc + (mm.bias ? oc : 0)) * s;
      Row& r = add(m, std::string("matmul_fwd_") + mm.name, shp, fb, 2 * n * ic * oc, [&] {
        cu::matmul_forward(mm_, o, static_cast<T*>(nullptr), in, b.w, mm.bias ? b.bias : nullptr,
                           int(N), mm.IC, mm.OC, false, s_);
      });
      if (r.ms >= 0) {
        r.lib = "cublasGemmEx";
        r.lib_ms = timer_.time([&] { gemm_ex(o, b.w, in, mm.OC, int(N), mm.IC); });
      }
      if (gelu_fc && std::string(mm.name) == "fc") {
        add(m, "matmul_fwd_fc_gelu", shp, fb + n * oc * s, 2 * n * ic * oc, [&] {
          cu::matmul_forward(mm_, o, b.dinp /*pre-activation*/, in, b.w, b.bias, int(N), mm.IC,
                             mm.OC, true, s_);
        });
      }
      // The bias gradient comes from the BGRADB epilogue (no extra pass over
      // dout): its vector written to scratch, read back and added to dbias.
      const double bb = (2 * n * oc + oc * ic + n * ic + n * ic) * s + 2 * oc * ic * 4.0 +
                        (mm.bias ? 4 * oc * 4.0 : 0);
      Row& rb = add(m, std::string("matmul_bwd_") + mm.name, shp, bb,
                    4 * n * ic * oc + (mm.bias ? n * oc : 0), [&] {
                      cu::matmul_backward(mm_, b.dinp, b.dw, mm.bias ? b.db : nullptr, o, in, b.w,
                                          static_cast<const T*>(nullptr), int(N), mm.IC, mm.OC,
                                          1.0f, b.bias_scratch, s_);
                    });
      if (rb.ms >= 0) {
        rb.lib = "cublasGemmEx x2";
        rb.lib_ms =
            timer_.time([&] { gemm_ex_bwd(b.dinp, b.dw, o, in, b.w, int(N), mm.IC, mm.OC); });
      }
      if (gelu_fc && std::string(mm.name) == "fcproj") {
        // With the DGELU epilogue (the engine's default in bf16): dinp times
        // gelu'(pre-activation), the pre-activation [N, IC] read once more.
        add(m, "matmul_bwd_fcproj_dgelu", shp, bb + n * ic * s,
            4 * n * ic * oc + (mm.bias ? n * oc : 0), [&] {
              cu::matmul_backward(mm_, b.dinp, b.dw, mm.bias ? b.db : nullptr, o, in, b.w,
                                  static_cast<const T*>(in), int(N), mm.IC, mm.OC, 1.0f,
                                  b.bias_scratch, s_);
            });
      }
    }
  }

  // The Llama block's kernels at a Llama preset: bytes and FLOPs from the
  // headers of kernels/cuda/rmsnorm.cu, rope.cu, swiglu.cu and attention.cu.
  void run_llama(const ModelShape& m) {
    const ModelConfig& c = m.cfg;
    const int B = o_.batch, Tn = o_.seq, C = c.channels, NH = c.num_heads, NKV = c.kv_heads(),
              D = c.head_dim(), Q = c.qkv_width(), I = c.hidden(), V = c.vocab_size,
              Vp = c.padded_vocab_size;
    const float eps = c.norm_eps;
    const std::size_t N = std::size_t(B) * Tn, NC = N * C, NI = N * std::size_t(I);
    const double s = sizeof(T);
    std::uint32_t seed = 1;
    auto fill = [&](auto& buf, float lo = -1.0f, float hi = 1.0f) {
      cu::fill_uniform(buf.get(), buf.size(), seed++, lo, hi, s_);
    };
    // Matmul operands: the widest activation is max(2I, Q, C) columns.
    const std::size_t wide = N * std::size_t(std::max({2 * I, Q, C}));
    const std::size_t wsize =
        std::max({std::size_t(Vp) * C, std::size_t(2) * I * C, std::size_t(Q) * C});
    DeviceBuffer<T> x(NC), y(NC), out(NC), dx(NC), qkv(N * Q), dqkv(N * Q), a(wide), b(wide),
        d(wide), w(wsize), wn(C), gate_up(2 * NI), dgate_up(2 * NI), act(NI), dact(NI),
        logits(N * std::size_t(Vp));
    DeviceBuffer<float> dw(wsize), dwn(C), rrms(N), lse(N * NH), dsc(N * NH),
        n_scr(cu::rmsnorm_backward_scratch(int(N), C)), rope_c(std::size_t(Tn) * D / 2),
        rope_s(std::size_t(Tn) * D / 2);
    for (auto* buf : {&x, &y, &out, &dx, &dqkv, &a, &b, &d, &w, &gate_up, &dgate_up, &act, &dact})
      fill(*buf);
    fill(wn, 0.5f, 1.5f);
    fill(qkv, -2.0f, 2.0f);
    fill(logits, -4.0f, 4.0f);
    for (auto* buf : {&dw, &dwn}) fill(*buf);
    fill(rrms, 0.5f, 2.0f);
    {
      std::vector<float> hc(rope_c.size()), hs(rope_s.size());
      cpu::rope_table(hc.data(), hs.data(), 0, Tn, D, c.rope);
      MYELIN_CUDA_CHECK(
          cudaMemcpy(rope_c.get(), hc.data(), hc.size() * sizeof(float), cudaMemcpyHostToDevice));
      MYELIN_CUDA_CHECK(
          cudaMemcpy(rope_s.get(), hs.data(), hs.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    const Tokens tk(*this, N, V);
    const std::string bt = "B" + std::to_string(B) + " T" + std::to_string(Tn);
    const std::string sc = bt + " C" + std::to_string(C);

    // ---- embedding (no position table), RMSNorm ----------------------------------------------
    add(m, "encoder_fwd", sc, 2 * NC * s + 4.0 * N, 0.0, [&] {
      cu::encoder_forward(out.get(), tk.tok.get(), w.get(), static_cast<const T*>(nullptr), B, Tn,
                          C, s_);
    });
    add(m, "encoder_bwd", sc, NC * s + double(tk.buckets) * C * 8.0, double(NC), [&] {
      cu::encoder_backward(dw.get(), static_cast<float*>(nullptr), x.get(), tk.btok.get(),
                           tk.boff.get(), tk.bpos.get(), tk.buckets, B, Tn, C, s_);
    });
    add(m, "rmsnorm_fwd", sc, 2 * NC * s + C * s + 4.0 * N, 4.0 * NC,
        [&] { cu::rmsnorm_forward(out.get(), rrms.get(), x.get(), wn.get(), int(N), C, eps, s_); });
    add(m, "residual_rmsnorm_fwd", sc, 4 * NC * s + C * s + 4.0 * N, 5.0 * NC, [&] {
      cu::residual_rmsnorm_forward(dx.get(), out.get(), rrms.get(), x.get(), y.get(), wn.get(),
                                   int(N), C, eps, s_);
    });
    add(m, "rmsnorm_bwd", sc,
        4 * NC * s + C * s + 4.0 * N + 2.0 * double(cu::rmsnorm_backward_scratch(int(N), C)) * 4,
        8.0 * NC, [&] {
          cu::rmsnorm_backward(dx.get(), dwn.get(), y.get(), x.get(), wn.get(), rrms.get(), int(N),
                               C, n_scr.get(), s_);
        });

    // ---- RoPE on the q and k heads of qkv, in place (a rotation: values stay bounded) -------
    const int H = NH + NKV;
    const double rope_bytes = 2.0 * double(N) * H * D * s + double(Tn) * D * 4.0;
    const std::string rsh = bt + " H" + std::to_string(H) + " D" + std::to_string(D);
    add(m, "rope_fwd", rsh, rope_bytes, 3.0 * double(N) * H * D, [&] {
      cu::rope_forward(qkv.get(), qkv.get(), rope_c.get(), rope_s.get(), B, Tn, H, D, Q, s_);
    });
    add(m, "rope_bwd", rsh, rope_bytes, 3.0 * double(N) * H * D, [&] {
      cu::rope_backward(dqkv.get(), dqkv.get(), rope_c.get(), rope_s.get(), B, Tn, H, D, Q, s_);
    });

    // ---- SwiGLU on (gate | up) [N, 2I] ---------------------------------------------------------
    const std::string ish = bt + " I" + std::to_string(I);
    add(m, "swiglu_fwd", ish, 3.0 * double(NI) * s, 6.0 * double(NI),
        [&] { cu::swiglu_forward(act.get(), gate_up.get(), int(N), I, s_); });
    add(m, "swiglu_bwd", ish, 5.0 * double(NI) * s, 12.0 * double(NI),
        [&] { cu::swiglu_backward(dgate_up.get(), dact.get(), gate_up.get(), int(N), I, s_); });

    // ---- matmuls (no biases) -------------------------------------------------------------------
    matmuls(m,
            {{"qkv", C, Q, false},
             {"attproj", NH * D, C, false},
             {"fc", C, 2 * I, false},
             {"fcproj", I, C, false},
             {"lm_head", C, Vp, false}},
            {a.get(), b.get(), d.get(), logits.get(), w.get(), nullptr, dw.get(), nullptr, nullptr},
            false);

    // ---- grouped-query attention ---------------------------------------------------------------
    const double causal = double(B) * NH * (double(Tn) * (Tn + 1) / 2.0) * D;
    const double q_el = double(N) * Q, o_el = double(N) * NH * D;
    const std::string ash =
        sc + " NH" + std::to_string(NH) + " NKV" + std::to_string(NKV) + " D" + std::to_string(D);
    add(m, "gqa_attention_fwd", ash, (q_el + o_el) * s + 4.0 * N * NH, 4 * causal,
        [&] { cu::attention_forward(out.get(), lse.get(), qkv.get(), B, Tn, NH, NKV, D, s_); });
    if (std::regex_search("gqa_attention_bwd", re_)) // lse and out consistent with qkv
      cu::attention_forward(out.get(), lse.get(), qkv.get(), B, Tn, NH, NKV, D, s_);
    add(m, "gqa_attention_bwd", ash, (2 * q_el + 2 * o_el) * s + 8.0 * N * NH, 10 * causal, [&] {
      cu::attention_backward(dqkv.get(), dsc.get(), y.get(), qkv.get(), out.get(), lse.get(), B, Tn,
                             NH, NKV, D, s_);
    });
    // The tensor-core kernels (attention_fa2.cu), which the engine runs in bf16
    // at head size 64 or 128: the same bytes and FLOP accounting.
    if constexpr (std::is_same<T, cu::bf16>::value) {
      if (cu::attention_tc_supported(NH, NKV, D)) {
        add(m, "gqa_attention_fwd_tc", ash, (q_el + o_el) * s + 4.0 * N * NH, 4 * causal, [&] {
          cu::attention_forward_tc(out.get(), lse.get(), qkv.get(), B, Tn, NH, NKV, D, s_);
        });
        if (std::regex_search("gqa_attention_bwd_tc", re_))
          cu::attention_forward_tc(out.get(), lse.get(), qkv.get(), B, Tn, NH, NKV, D, s_);
        add(m, "gqa_attention_bwd_tc", ash, (2 * q_el + 2 * o_el) * s + 8.0 * N * NH, 10 * causal,
            [&] {
              cu::attention_backward_tc(dqkv.get(), dsc.get(), y.get(), qkv.get(), out.get(),
                                        lse.get(), B, Tn, NH, NKV, D, s_);
            });
      }
    }

    // ---- classifier, optimizer ------------------------------------------------------------------
    const double nv = double(N) * Vp;
    add(m, "classifier_fused", bt + " V" + std::to_string(V) + " Vp" + std::to_string(Vp),
        3 * nv * s + 8.0 * N, 5.0 * double(N) * V, [&] {
          cu::classifier_forward_backward(rrms.get(), logits.get(), tk.tgt.get(), int(N), V, Vp,
                                          1.0f / float(N), true, s_);
        });
    optimizer(m, c.param_count().value_or(0));
  }

  // Tokens and targets (xorshift, fixed seed) on the device, and the encoder
  // backward's buckets.
  struct Tokens {
    DeviceBuffer<int> tok, tgt, btok, boff, bpos;
    int buckets = 0;
    Tokens(Bench& b, std::size_t N, int V) {
      std::vector<int> t(N), g(N);
      std::uint64_t st = 88172645463325252ull;
      for (std::size_t i = 0; i < N; ++i) {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        t[i] = int(st % std::uint64_t(V));
        g[i] = int((st >> 20) % std::uint64_t(V));
      }
      cu::EncoderBuckets bk;
      cu::build_encoder_buckets(t.data(), int(N), bk);
      buckets = bk.num_buckets();
      for (auto [d, h] : {std::pair{&tok, &t},
                          {&tgt, &g},
                          {&btok, &bk.tokens},
                          {&boff, &bk.offsets},
                          {&bpos, &bk.positions}}) {
        d->allocate(h->size());
        MYELIN_CUDA_CHECK(
            cudaMemcpy(d->get(), h->data(), h->size() * sizeof(int), cudaMemcpyHostToDevice));
      }
      MYELIN_CUDA_CHECK(cudaStreamSynchronize(b.s_));
    }
  };

  // AdamW and the gradient norm over P parameters (fp32 master, moments, grads).
  void optimizer(const ModelShape& m, std::size_t P) {
    if (!std::regex_search("adamw", re_) && !std::regex_search("global_norm", re_)) return;
    std::uint32_t seed = 101;
    auto fill = [&](auto& buf, float lo = -1.0f, float hi = 1.0f) {
      cu::fill_uniform(buf.get(), buf.size(), seed++, lo, hi, s_);
    };
    DeviceBuffer<float> master(P), g(P), mm1(P), vv(P);
    DeviceBuffer<T> p(std::is_same<T, float>::value ? 0 : P);
    fill(master);
    fill(g);
    fill(mm1, -0.1f, 0.1f);
    fill(vv, 0.001f, 0.1f);
    const double pb = std::is_same<T, float>::value ? 28.0 : 30.0;
    const std::string psh = "params " + std::to_string(P);
    cu::AdamWArgs a{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 0};
    add(m, "adamw", psh, pb * double(P), 15.0 * double(P), [&] {
      if constexpr (std::is_same<T, float>::value)
        cu::adamw_update<float>(master.get(), nullptr, g.get(), mm1.get(), vv.get(), P, a, s_);
      else
        cu::adamw_update<T>(p.get(), master.get(), g.get(), mm1.get(), vv.get(), P, a, s_);
    });
    DeviceBuffer<double> nout(1), nscr(cu::kSumSquaresBlocks);
    add(m, "global_norm", psh, 4.0 * double(P), 2.0 * double(P),
        [&] { cu::sum_squares<float>(nout.get(), g.get(), P, nscr.get(), s_); });
  }

 private:
  Row& add(const ModelShape& m, const std::string& kernel, const std::string& shape, double bytes,
           double flops, const std::function<void()>& f) {
    static Row skipped;
    skipped = Row{};
    skipped.ms = -1;
    if (!std::regex_search(kernel, re_)) return skipped;
    Row r;
    r.model = m.name;
    r.kernel = kernel;
    r.shape = shape;
    r.bytes = bytes;
    r.flops = flops;
    r.ms = timer_.time(f);
    rows.push_back(r);
    return rows.back();
  }

  // out[N,OC] = in[N,IC] W^T through plain cuBLAS.
  void gemm_ex(T* out, const T* W, const T* in, int OC, int N, int IC) {
    const float one = 1.0f, zero = 0.0f;
    BENCH_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, W,
                                    cuda_type<T>(), IC, in, cuda_type<T>(), IC, &zero, out,
                                    cuda_type<T>(), OC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  void gemm_ex_bwd(T* dinp, float* dW, const T* dout, const T* in, const T* W, int N, int IC,
                   int OC) {
    const float one = 1.0f, zero = 0.0f;
    BENCH_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, &one, W,
                                    cuda_type<T>(), IC, dout, cuda_type<T>(), OC, &zero, dinp,
                                    cuda_type<T>(), IC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    BENCH_CUBLAS_CHECK(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, &one, in,
                                    cuda_type<T>(), IC, dout, cuda_type<T>(), OC, &one, dW,
                                    CUDA_R_32F, IC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  const CudaBenchOptions& o_;
  cudaStream_t s_;
  Timer& timer_;
  cublasHandle_t blas_;
  const Limits& lim_;
  std::regex re_;
  cu::MatmulContext mm_;
};

struct BlasHandle {
  cublasHandle_t h = nullptr;
  BlasHandle() { MYELIN_CUBLAS_CHECK(cublasCreate(&h)); }
  ~BlasHandle() {
    if (h) cublasDestroy(h);
  }
};

std::string fmt(double v, int prec) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

} // namespace

int run_cuda_kernel_bench(const CudaBenchOptions& opt) {
  std::vector<ModelShape> models;
  {
    std::stringstream ss(opt.models);
    std::string item;
    while (std::getline(ss, item, ',')) {
      ModelShape m;
      if (!model_shape(item, m)) {
        std::cerr << "--models: unknown model '" << item << "' (expected " << kPresetNames << ")\n";
        return 2;
      }
      models.push_back(m);
    }
  }
  std::string format = opt.format;
  if (format.empty() && !opt.output.empty()) {
    const auto dot = opt.output.rfind('.');
    format = dot == std::string::npos ? "json" : opt.output.substr(dot + 1);
  }
  if (!opt.output.empty() && format != "json" && format != "csv") {
    std::cerr << "--format: expected json or csv, got '" << format << "'\n";
    return 2;
  }
  if (opt.repetitions < 1 || opt.batch < 1 || opt.seq < 1) {
    std::cerr << "bench: repetitions, batch and seq must be positive\n";
    return 2;
  }
  if (opt.dtype != "bf16" && opt.dtype != "fp32") {
    std::cerr << "--dtype: expected bf16 or fp32, got '" << opt.dtype << "'\n";
    return 2;
  }
  try {
    std::regex check(opt.filter);
  } catch (const std::regex_error&) {
    std::cerr << "--filter: not a valid regular expression: " << opt.filter << "\n";
    return 2;
  }
  try {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
      std::cerr << "bench: no CUDA device\n";
      return 1;
    }
    MYELIN_CUDA_CHECK(cudaSetDevice(opt.device_index));
    cudaDeviceProp prop{};
    MYELIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device_index));
    cu::Stream stream;
    BlasHandle blas;
    MYELIN_CUBLAS_CHECK(cublasSetStream(blas.h, stream.get()));
    Timer timer(stream.get(), std::size_t(prop.l2CacheSize), opt.repetitions);

    // ---- machine limits ----
    Limits lim;
    {
      const std::size_t bytes = std::size_t(1) << 30;
      DeviceBuffer<unsigned char> a(bytes), b(bytes);
      MYELIN_CUDA_CHECK(cudaMemsetAsync(a.get(), 1, bytes, stream.get()));
      const double ms = timer.time([&] {
        MYELIN_CUDA_CHECK(
            cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, stream.get()));
      });
      lim.bw = 2.0 * double(bytes) / (ms * 1e-3);
    }
    {
      const int n = 8192;
      DeviceBuffer<cu::bf16> A(std::size_t(n) * n), Bm(std::size_t(n) * n), D(std::size_t(n) * n);
      cu::fill_uniform(A.get(), A.size(), 1, -1.0f, 1.0f, stream.get());
      cu::fill_uniform(Bm.get(), Bm.size(), 2, -1.0f, 1.0f, stream.get());
      cu::MatmulContext ctx;
      const double ms = timer.time(
          [&] { cu::gemm_tn<cu::bf16>(ctx, D.get(), A.get(), Bm.get(), n, n, n, stream.get()); });
      lim.flops = 2.0 * double(n) * n * n / (ms * 1e-3);
    }
    std::printf(
        "device: %s, %d SMs, L2 %.0f MiB; dtype %s; B=%d T=%d; median of %d runs, L2 flushed\n",
        prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0, opt.dtype.c_str(),
        opt.batch, opt.seq, opt.repetitions);
    std::printf("limits: copy bandwidth %.0f GB/s (1 GiB D2D memcpy), bf16 GEMM %.1f TFLOP/s "
                "(cuBLASLt 8192^3)\n\n",
                lim.bw / 1e9, lim.flops / 1e12);

    std::vector<Row> rows;
    for (const ModelShape& m : models) {
      if (opt.dtype == "bf16") {
        Bench<cu::bf16> b(opt, stream.get(), timer, blas.h, lim);
        b.run_model(m);
        rows.insert(rows.end(), b.rows.begin(), b.rows.end());
      } else {
        Bench<float> b(opt, stream.get(), timer, blas.h, lim);
        b.run_model(m);
        rows.insert(rows.end(), b.rows.begin(), b.rows.end());
      }
    }

    // ---- report ----
    const double balance = lim.flops / lim.bw; // FLOP per byte
    struct Out {
      Row r;
      double gbs, tfs, share;
      std::string bound;
    };
    std::vector<Out> outs;
    for (const Row& r : rows) {
      Out o{r, r.bytes / (r.ms * 1e-3) / 1e9, r.flops / (r.ms * 1e-3) / 1e12, 0, ""};
      if (r.flops / r.bytes >= balance) {
        o.bound = "compute";
        o.share = o.tfs * 1e12 / lim.flops;
      } else {
        o.bound = "memory";
        o.share = o.gbs * 1e9 / lim.bw;
      }
      outs.push_back(o);
    }
    const char* hdr = "%-6s %-24s %-30s %10s %9s %9s %8s %6s %-8s %10s\n";
    std::printf(hdr, "model", "kernel", "shape", "median_ms", "GB/s", "TFLOP/s", "share", "",
                "bound", "lib_ms");
    for (const Out& o : outs) {
      std::printf("%-6s %-24s %-30s %10.4f %9.1f %9.2f %7.1f%% %6s %-8s %10s\n", o.r.model.c_str(),
                  o.r.kernel.c_str(), o.r.shape.c_str(), o.r.ms, o.gbs, o.tfs, 100 * o.share, "",
                  o.bound.c_str(), o.r.lib_ms >= 0 ? fmt(o.r.lib_ms, 4).c_str() : "");
    }
    std::printf("\nlib_ms: cuBLAS (cublasGemmEx) for the same GEMMs, without epilogues; attention "
                "has no library column (cuDNN frontend not available).\n");

    if (!opt.output.empty()) {
      std::ofstream f(opt.output);
      if (!f) {
        std::cerr << "--output: cannot write " << opt.output << "\n";
        return 1;
      }
      if (format == "csv") {
        f << "model,kernel,shape,median_ms,bytes,flops,gb_s,tflop_s,bound,share,lib,lib_ms\n";
        for (const Out& o : outs)
          f << o.r.model << ',' << o.r.kernel << ",\"" << o.r.shape << "\"," << o.r.ms << ','
            << o.r.bytes << ',' << o.r.flops << ',' << o.gbs << ',' << o.tfs << ',' << o.bound
            << ',' << o.share << ',' << o.r.lib << ','
            << (o.r.lib_ms >= 0 ? fmt(o.r.lib_ms, 6) : "") << '\n';
      } else {
        f << "{\"device\":\"" << json_escape(prop.name) << "\",\"dtype\":\"" << opt.dtype
          << "\",\"batch\":" << opt.batch << ",\"seq\":" << opt.seq
          << ",\"repetitions\":" << opt.repetitions << ",\"peak_bytes_per_s\":" << lim.bw
          << ",\"peak_flop_per_s\":" << lim.flops << ",\"results\":[";
        for (std::size_t i = 0; i < outs.size(); ++i) {
          const Out& o = outs[i];
          f << (i ? "," : "") << "\n{\"model\":\"" << o.r.model << "\",\"kernel\":\"" << o.r.kernel
            << "\",\"shape\":\"" << json_escape(o.r.shape) << "\",\"median_ms\":" << o.r.ms
            << ",\"bytes\":" << o.r.bytes << ",\"flops\":" << o.r.flops << ",\"gb_s\":" << o.gbs
            << ",\"tflop_s\":" << o.tfs << ",\"bound\":\"" << o.bound << "\",\"share\":" << o.share
            << ",\"lib\":\"" << o.r.lib << "\",\"lib_ms\":";
          if (o.r.lib_ms >= 0)
            f << o.r.lib_ms;
          else
            f << "null";
          f << "}";
        }
        f << "\n]}\n";
      }
    }
    return 0;
  } catch (const InputError& e) {
    std::cerr << "bench: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "bench: " << e.what() << "\n";
    return 1;
  }
}

} // namespace myelin
