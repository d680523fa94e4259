// Engine-level checks shared by the CUDA engine tests on a GPU (tests/gpu) and
// in CPU simulation (tests/sim): a tiny GPT-2, perturbed initial parameters
// (every gradient path non-trivial), deterministic batches, and a short
// training loop with gradient accumulation through two slots.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "runtime/model/config.h"
#include "runtime/model/engine.h"
#include "runtime/model/init.h"
#include "tests/common/kernel_check.h"
#include "tests/common/llama_config.h"
#include "tests/common/step_check.h"

namespace myelin::engine_check {

// A CUDA engine of c for micro-batches up to 2 x 16 with 2 slots; the whole
// model unless a stage is given.
inline std::unique_ptr<myelin::Engine> cuda_engine(const myelin::ModelConfig& c, const char* dtype,
                                                   int recompute = 0,
                                                   myelin::StageSpec st = myelin::StageSpec{}) {
  myelin::EngineOptions opt;
  opt.device = "cuda";
  opt.dtype = dtype;
  opt.slots = 2;
  opt.recompute = recompute;
  if (st.layer_end == 0) st = myelin::StageSpec::whole(c);
  return myelin::make_engine(c, st, 2, 16, opt);
}

// Sets an environment variable for the lifetime of the object.
class EnvScope {
 public:
  EnvScope(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value, 1);
  }
  ~EnvScope() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

// Copies `bytes` on e's stream (the engines run on non-blocking streams, which
// a plain cudaMemcpy on the legacy stream does not wait for, nor they for it)
// and waits for the copy, so e's next kernels and the host see its result.
inline void copy_on_engine_stream(const myelin::Engine& e, void* dst, const void* src,
                                  std::size_t bytes, cudaMemcpyKind kind) {
  const auto s = static_cast<cudaStream_t>(e.device_stream());
  MYELIN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, s));
  MYELIN_CUDA_CHECK(cudaStreamSynchronize(s));
}

inline myelin::ModelConfig tiny_config() {
  myelin::ModelConfig c;
  c.max_seq_len = 16;
  c.vocab_size = 50;
  c.padded_vocab_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.channels = 32;
  return c;
}

// The Llama family at the same size: 4 query heads reading 2 kv heads of 8
// channels, SwiGLU width 48, an untied head, rotary base 100 (large angles at
// these short positions).
inline myelin::ModelConfig tiny_llama_config() {
  myelin::cpu::RopeParams rope;
  rope.theta = 100.0;
  return myelin::test_util::llama_config(
      tiny_config(), {.kv_heads = 2, .intermediate = 48, .tied_head = false, .rope = rope});
}

inline std::vector<float> perturbed_init(const myelin::ModelConfig& c) {
  auto p = myelin::gpt2_init(c, 7);
  const myelin::ParamLayout lay(c);
  // Non-trivial biases and norm parameters so every gradient path is exercised
  // (a tensor the family lacks has size 0).
  std::mt19937_64 g(99);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  for (int k : {myelin::kLn1w, myelin::kLn1b, myelin::kQkvb, myelin::kAttprojb, myelin::kLn2w,
                myelin::kLn2b, myelin::kFcb, myelin::kFcprojb, myelin::kLnfw, myelin::kLnfb})
    for (std::size_t i = 0; i < lay.sizes[k]; ++i) p[lay.offsets[k] + i] += u(g);
  return p;
}

inline void make_batch(const myelin::ModelConfig& c, int B, int Tn, int step, std::vector<int>& tok,
                       std::vector<int>& tgt) {
  tok.resize(std::size_t(B) * Tn);
  tgt.resize(tok.size());
  for (std::size_t i = 0; i < tok.size(); ++i) {
    tok[i] = int((i * 31 + std::size_t(step) * 17 + 5) % std::size_t(c.vocab_size));
    tgt[i] = int((i * 13 + std::size_t(step) * 7 + 11) % std::size_t(c.vocab_size));
  }
}

// `steps` AdamW steps of two accumulated micro-batches (slots 0 and 1) of
// B=2 x T=16; returns the step losses. With `norms`, the gradient sum of
// squares of every step; with `clip`, gradients are clipped to norm 1.
inline std::vector<float> train_losses(myelin::Engine& e, const myelin::ModelConfig& c, int steps,
                                       std::vector<double>* norms, bool clip = true) {
  const int B = 2, Tn = 16;
  myelin::AdamWConfig ac;
  ac.lr = 1e-3f;
  ac.weight_decay = 0.1f;
  std::vector<float> losses;
  std::vector<int> tok, tgt;
  for (int s = 1; s <= steps; ++s) {
    make_batch(c, B, Tn, s, tok, tgt);
    e.zero_grad();
    // two micro-batches of gradient accumulation through two slots
    float loss = 0.0f;
    for (int mb = 0; mb < 2; ++mb) {
      std::vector<int> t2(tok), g2(tgt);
      for (auto& v : t2) v = (v + mb) % c.vocab_size;
      loss += 0.5f * e.forward(mb, t2.data(), g2.data(), B, Tn);
    }
    for (int mb = 1; mb >= 0; --mb) e.backward(mb, 0.5f);
    if (clip || norms) {
      const double ss = e.grad_sum_squares(0, e.layout().total);
      if (norms) norms->push_back(ss);
      if (clip && ss > 1.0) e.scale_grads(float(1.0 / std::sqrt(ss)));
    }
    e.adamw(ac, ac.lr, s, 0, e.layout().total);
    losses.push_back(loss);
  }
  return losses;
}

// Two pipeline stages (layer 0 | layer 1) of c compute the same loss and layer
// gradients as the whole model. make(stage) builds an fp32 CUDA engine of c
// for that stage.
template <class Make>
void expect_pipeline_stages_match_whole_model(Make make,
                                              const myelin::ModelConfig& c = tiny_config()) {
  using myelin::kernel_check::expect_close;
  const auto params = perturbed_init(c);
  auto whole = make(myelin::StageSpec::whole(c));
  auto s0 = make(myelin::StageSpec{0, 1, true, false});
  auto s1 = make(myelin::StageSpec{1, 2, false, true});
  for (auto* e : {whole.get(), s0.get(), s1.get()}) {
    e->set_params(params);
    e->zero_grad();
  }
  std::vector<int> tok, tgt;
  make_batch(c, 2, 16, 3, tok, tgt);
  const float lw = whole->forward(0, tok.data(), tgt.data(), 2, 16);
  whole->backward(0, 1.0f);
  EXPECT_EQ(s0->forward(0, tok.data(), nullptr, 2, 16), 0.0f);
  const std::size_t act = std::size_t(2) * 16 * c.channels * sizeof(float);
  copy_on_engine_stream(*s1, s1->input_act(0).data, s0->output_act(0).data, act,
                        cudaMemcpyDeviceToDevice);
  const float l1 = s1->forward(0, nullptr, tgt.data(), 2, 16);
  EXPECT_NEAR(l1, lw, 1e-6 * std::fabs(lw));
  s1->backward(0, 1.0f);
  copy_on_engine_stream(*s0, s0->output_grad(0).data, s1->input_grad(0).data, act,
                        cudaMemcpyDeviceToDevice);
  s0->backward(0, 1.0f);
  const myelin::ParamLayout lay(c);
  std::vector<float> gw(lay.total), g0(lay.total), g1(lay.total);
  auto fetch = [&](myelin::Engine& e, std::vector<float>& out) { out = e.flat_grads(); };
  fetch(*whole, gw);
  fetch(*s0, g0);
  fetch(*s1, g1);
  auto cmp = [&](const std::vector<float>& g, std::size_t a, std::size_t b, const char* what) {
    std::vector<double> ref(gw.begin() + long(a), gw.begin() + long(b));
    std::vector<float> got(g.begin() + long(a), g.begin() + long(b));
    expect_close(ref, got, 1e-5, 1e-5, what);
  };
  for (int k = 0; k < myelin::kNumParamTensors; ++k) {
    if (!myelin::ParamLayout::is_layer_tensor(k)) continue;
    const std::size_t per = lay.per_layer(k, c.num_layers);
    cmp(g0, lay.offsets[k], lay.offsets[k] + per, myelin::kParamTensorNames[k]);
    cmp(g1, lay.offsets[k] + per, lay.offsets[k] + 2 * per, myelin::kParamTensorNames[k]);
  }
  cmp(g0, lay.offsets[myelin::kWpe], lay.offsets[myelin::kWpe] + lay.sizes[myelin::kWpe], "wpe");
  cmp(g1, lay.offsets[myelin::kLnfw], lay.offsets[myelin::kLnfb] + lay.sizes[myelin::kLnfb], "lnf");
  cmp(g1, lay.offsets[myelin::kLmHead], lay.offsets[myelin::kLmHead] + lay.sizes[myelin::kLmHead],
      "lm_head"); // untied heads only (size 0 when tied)
  // wte: the stages' contributions add up to the whole model's gradient.
  std::vector<float> wsum(lay.sizes[myelin::kWte]);
  for (std::size_t i = 0; i < wsum.size(); ++i) wsum[i] = g0[i] + g1[i];
  std::vector<double> wref(gw.begin(), gw.begin() + long(wsum.size()));
  expect_close(wref, wsum, 1e-5, 1e-5, "wte (sum of stages)");
}

// A CUDA engine in fp32 trains like the CPU engine over `steps` steps: losses
// to 1e-5 relative, gradient norms to 1e-4, then parameters, the last
// position's logits (sampling) and eval_loss. `gpu` is an fp32 CUDA engine of
// c with 2 slots.
inline void expect_fp32_matches_cpu_engine(myelin::Engine& gpu_engine, int steps,
                                           const myelin::ModelConfig& c = tiny_config()) {
  using myelin::kernel_check::expect_close;
  using myelin::kernel_check::to_d;
  const auto params = perturbed_init(c);
  auto cpu = myelin::make_cpu_engine(c, myelin::StageSpec::whole(c), 2, 16, 2);
  myelin::Engine* gpu = &gpu_engine;
  cpu->set_params(params);
  gpu->set_params(params);
  std::vector<double> ncpu, ngpu;
  const auto lc = train_losses(*cpu, c, steps, &ncpu);
  const auto lg = train_losses(*gpu, c, steps, &ngpu);
  for (std::size_t i = 0; i < lc.size(); ++i) {
    EXPECT_NEAR(lg[i], lc[i], 1e-5 * std::fabs(lc[i])) << "loss at step " << i + 1;
    EXPECT_NEAR(ngpu[i], ncpu[i], 1e-4 * ncpu[i]) << "grad sum of squares at step " << i + 1;
  }
  std::vector<float> pc(cpu->layout().total), pg(gpu->layout().total);
  cpu->get_params(pc);
  gpu->get_params(pg);
  expect_close(to_d(pc), pg, 1e-4, 1e-4, "parameters after training");
  // Sampling path: logits of the last position.
  std::vector<int> tok, tgt;
  make_batch(c, 1, 16, 0, tok, tgt);
  cpu->forward(0, tok.data(), nullptr, 1, 16);
  gpu->forward(0, tok.data(), nullptr, 1, 16);
  std::vector<float> lcpu(c.padded_vocab_size), lgpu(c.padded_vocab_size);
  cpu->last_logits(15, lcpu);
  gpu->last_logits(15, lgpu);
  expect_close(to_d(lcpu), lgpu, 1e-4, 1e-4, "last_logits");
  EXPECT_NEAR(gpu->eval_loss(tok.data(), tgt.data(), 1, 16),
              cpu->eval_loss(tok.data(), tgt.data(), 1, 16), 1e-4);
}

// bf16 trains like fp32 from the same weights over `steps` steps: losses
// within 2e-2 relative. Returns the bf16 losses.
inline std::vector<float> expect_bf16_close_to_fp32(const myelin::ModelConfig& c, int steps,
                                                    bool clip) {
  const auto params = perturbed_init(c);
  auto f32 = cuda_engine(c, "fp32");
  auto b16 = cuda_engine(c, "bf16");
  f32->set_params(params);
  b16->set_params(params);
  const auto lf = train_losses(*f32, c, steps, nullptr, clip);
  const auto lb = train_losses(*b16, c, steps, nullptr, clip);
  for (std::size_t i = 0; i < lf.size(); ++i) {
    EXPECT_TRUE(std::isfinite(lb[i])) << "step " << i + 1;
    EXPECT_NEAR(lb[i], lf[i], 2e-2 * std::fabs(lf[i])) << "step " << i + 1;
  }
  return lb;
}

// --recompute 1 and 2 give the same bits as storing every activation, in fp32
// and bf16: losses, the last step's gradient buffer and the parameters after
// `steps` steps (and, with `clip`, every step's gradient norm); activation
// memory shrinks.
inline void expect_recompute_bit_identical(int steps, bool clip,
                                           const myelin::ModelConfig& c = tiny_config()) {
  const auto params = perturbed_init(c);
  for (const char* dtype : {"fp32", "bf16"}) {
    std::vector<float> ref_losses, ref_params, ref_grads;
    std::vector<double> ref_norms;
    std::size_t ref_act = 0;
    for (int rc = 0; rc <= 2; ++rc) {
      auto e = cuda_engine(c, dtype, rc);
      e->set_params(params);
      std::vector<double> norms;
      const auto losses = train_losses(*e, c, steps, clip ? &norms : nullptr, clip);
      std::vector<float> p(e->layout().total), g(e->layout().total);
      e->get_params(p);
      g = e->flat_grads();
      if (rc == 0) {
        ref_losses = losses;
        ref_norms = norms;
        ref_grads = g;
        ref_params = p;
        ref_act = e->memory_use().activations;
        continue;
      }
      EXPECT_EQ(losses, ref_losses) << dtype << " recompute " << rc;
      EXPECT_EQ(norms, ref_norms) << dtype << " recompute " << rc;
      EXPECT_EQ(g, ref_grads) << dtype << " recompute " << rc;
      EXPECT_EQ(p, ref_params) << dtype << " recompute " << rc;
      EXPECT_LT(e->memory_use().activations, ref_act) << dtype << " recompute " << rc;
    }
  }
}

// bf16 with head size 64 (C=128, NH=2) runs attention on tensor cores by
// default; over `steps` steps it trains like the CUDA-core kernels
// (MYELIN_CUDA_ATTN=fma, 1e-2) and like fp32 (2e-2). Returns the fp32, fma
// and tensor-core losses.
struct AttnLosses {
  std::vector<float> f32, fma, tc;
};
// `base` gives the family (tiny_llama_config(): one kv head for both query heads).
inline AttnLosses expect_tc_attention_trains_like_fma(int steps, bool clip,
                                                      myelin::ModelConfig base = tiny_config()) {
  auto c = base;
  c.channels = 128;
  c.num_heads = 2;
  if (c.llama()) c.num_kv_heads = 1;
  AttnLosses l;
  EXPECT_TRUE(myelin::cuda::attention_tc_supported(c.num_heads, c.kv_heads(), c.head_dim()));
  const auto params = perturbed_init(c);
  auto f32 = cuda_engine(c, "fp32");
  std::unique_ptr<myelin::Engine> fma;
  {
    EnvScope env("MYELIN_CUDA_ATTN", "fma");
    fma = cuda_engine(c, "bf16");
  }
  auto tc = cuda_engine(c, "bf16"); // the default for bf16 with head size 64
  for (auto* e : {f32.get(), fma.get(), tc.get()}) e->set_params(params);
  l.f32 = train_losses(*f32, c, steps, nullptr, clip);
  l.fma = train_losses(*fma, c, steps, nullptr, clip);
  l.tc = train_losses(*tc, c, steps, nullptr, clip);
  for (std::size_t i = 0; i < l.f32.size(); ++i) {
    EXPECT_TRUE(std::isfinite(l.tc[i])) << "step " << i + 1;
    EXPECT_NEAR(l.tc[i], l.fma[i], 1e-2 * std::fabs(l.fma[i])) << "tc vs fma, step " << i + 1;
    EXPECT_NEAR(l.tc[i], l.f32[i], 2e-2 * std::fabs(l.f32[i])) << "tc vs fp32, step " << i + 1;
  }
  return l;
}

// ---- graphs ----------------------------------------------------------------------------------
// What one run of graph_run() produced: every value the host can read.
struct GraphRun {
  std::vector<float> losses, evals, grads, params;
  std::vector<double> step_sums;           // the one-sync steps' loss sums and norms
  std::vector<std::vector<float>> at_hook; // a whole-model run with a hook: the gradients each
                                           // time the hook ran
  std::vector<int> hook_layers;
  std::vector<float> stage_losses, stage_params; // the two-stage pipeline
  std::size_t graphs = 0;                        // captured by all engines
};

// On a whole-model engine: `steps` training steps of c (train_losses: two
// micro-batches through slots 0 and 1, no clipping), eval_loss three times,
// three forward/backward of another shape (B = 1) with another dloss in slot
// 0, one more of the training shape with a new dloss, and `steps` one-sync
// steps (clipping on the device); with `hook`, a backward hook records the
// gradients each time it runs. Without a hook, then two updates after new
// moments (shard_optimizer) and `steps` steps of a two-stage pipeline
// (layer 0 | layer 1). With graphs on
// (MYELIN_CUDA_GRAPHS), the first call of each key runs plainly, the second
// is captured and launched, later ones replay.
inline GraphRun graph_run(const myelin::ModelConfig& c, const char* dtype, int steps, bool hook) {
  GraphRun r;
  const auto params = perturbed_init(c);
  {
    auto e = cuda_engine(c, dtype);
    e->set_params(params);
    if (hook)
      e->set_backward_hook([&](int layer) {
        r.hook_layers.push_back(layer);
        r.at_hook.push_back(e->flat_grads());
      });
    r.losses = train_losses(*e, c, steps, nullptr, false);
    std::vector<int> tok, tgt;
    make_batch(c, 2, 16, steps + 1, tok, tgt);
    for (int i = 0; i < 3; ++i) r.evals.push_back(e->eval_loss(tok.data(), tgt.data(), 2, 16));
    // Another shape and another dloss in slot 0, three times, then the
    // training shape again (its forward's graph replays after the other
    // shape's; its backward runs with a new dloss).
    e->zero_grad();
    for (int i = 0; i < 3; ++i) {
      r.evals.push_back(e->forward(0, tok.data(), tgt.data(), 1, 16));
      e->backward(0, 0.25f);
    }
    r.evals.push_back(e->forward(0, tok.data(), tgt.data(), 2, 16));
    e->backward(0, 0.375f);
    // The trainer's one-sync steps (begin_step, two micro-batches,
    // clip_grad_norm with clipping active, adamw, end_step).
    for (int step = steps + 1; step <= 2 * steps; ++step) {
      const auto sums = myelin::step_check::one_sync_step(*e, c, step, 1e-3f);
      r.step_sums.push_back(sums.loss_sum);
      r.step_sums.push_back(sums.grad_sum_squares);
    }
    r.graphs = e->graphs_captured();
    if (!hook) {
      // New moments (ZeRO's shard_optimizer): the updates' graphs must not
      // replay with the old ones. Two updates: plain, then captured.
      e->shard_optimizer(0, e->state().size);
      const myelin::AdamWConfig ac = myelin::step_check::step_adamw();
      for (int t = 2 * steps + 1; t <= 2 * steps + 2; ++t)
        e->adamw(ac, ac.lr, t, 0, e->state().size);
      r.graphs += e->graphs_captured();
    }
    r.grads = e->flat_grads();
    r.params.resize(e->layout().total);
    e->get_params(r.params);
  }
  if (hook) return r;
  auto s0 = cuda_engine(c, dtype, 0, myelin::StageSpec{0, 1, true, false});
  auto s1 = cuda_engine(c, dtype, 0, myelin::StageSpec{1, 2, false, true});
  const std::size_t act = std::size_t(2) * 16 * c.channels * sizeof(float);
  myelin::AdamWConfig ac;
  ac.lr = 1e-3f;
  for (auto* e : {s0.get(), s1.get()}) e->set_params(params);
  std::vector<int> tok, tgt;
  for (int step = 1; step <= steps; ++step) {
    make_batch(c, 2, 16, step, tok, tgt);
    for (auto* e : {s0.get(), s1.get()}) e->zero_grad();
    s0->forward(0, tok.data(), nullptr, 2, 16);
    copy_on_engine_stream(*s1, s1->input_act(0).data, s0->output_act(0).data, act,
                          cudaMemcpyDeviceToDevice);
    r.stage_losses.push_back(s1->forward(0, nullptr, tgt.data(), 2, 16));
    s1->backward(0, 1.0f);
    copy_on_engine_stream(*s0, s0->output_grad(0).data, s1->input_grad(0).data, act,
                          cudaMemcpyDeviceToDevice);
    s0->backward(0, 1.0f);
    for (auto* e : {s0.get(), s1.get()}) e->adamw(ac, ac.lr, step, 0, e->state().size);
  }
  std::vector<float> p0(s0->layout().total), p1(s1->layout().total);
  s0->get_params(p0);
  s1->get_params(p1);
  r.stage_params = p0;
  r.stage_params.insert(r.stage_params.end(), p1.begin(), p1.end());
  r.graphs += s0->graphs_captured() + s1->graphs_captured();
  return r;
}

// The graphs graph_run captures (keys called at least twice): training
// forward slots 0 and 1, backward slots 0 and 1, adamw; eval_loss; forward
// and backward at B = 1 (the backward with dloss 0.375 runs once: not
// captured); the one-sync steps' forwards (slots 0 and 1, keeping the loss)
// and clipping; without a hook, adamw after shard_optimizer and the pipeline's
// 2 stages x forward, backward, adamw. A backward with a hook is a graph per
// layer, head and tail.
inline std::size_t graph_run_keys(const myelin::ModelConfig& c, bool hook) {
  const std::size_t bwd = hook ? std::size_t(c.num_layers) + 2 : 1;
  return 2 + 2 * bwd + 1 + 1 + (1 + bwd) + 3 + (hook ? 0 : 1 + 6);
}

// Two runs give the same bits.
inline void expect_same_run(const GraphRun& a, const GraphRun& b, const std::string& what) {
  using myelin::kernel_check::expect_same_bits;
  expect_same_bits(a.losses, b.losses, what + ": losses");
  expect_same_bits(a.evals, b.evals, what + ": eval losses");
  EXPECT_EQ(a.step_sums, b.step_sums) << what << ": one-sync steps' loss sums and norms";
  expect_same_bits(a.grads, b.grads, what + ": gradients");
  expect_same_bits(a.params, b.params, what + ": parameters");
  EXPECT_EQ(a.hook_layers, b.hook_layers) << what << ": hook order";
  ASSERT_EQ(a.at_hook.size(), b.at_hook.size()) << what;
  for (std::size_t i = 0; i < a.at_hook.size(); ++i)
    expect_same_bits(a.at_hook[i], b.at_hook[i], what + ": gradients at hook " + std::to_string(i));
  expect_same_bits(a.stage_losses, b.stage_losses, what + ": pipeline losses");
  expect_same_bits(a.stage_params, b.stage_params, what + ": pipeline parameters");
}

} // namespace myelin::engine_check
