// The CPU engine as a whole, for each model family (GPT-2; Llama with
// grouped-query attention and an untied head): gradients against finite
// differences of the loss, gradient accumulation, pipeline stages composing
// to the whole model (what pipeline parallelism relies on), recomputation,
// and the engine's allocation against the memory plan.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/model/engine.h"
#include "runtime/model/init.h"
#include "runtime/model/memory_plan.h"
#include "runtime/util/rng.h"
#include "tests/common/llama_config.h"
#include "tests/common/step_check.h"

using namespace myelin;

namespace {
ModelConfig gpt2_cfg() { return ModelConfig{16, 50, 64, 3, 2, 16}; }
ModelConfig llama_cfg() {
  return test_util::llama_config(
      ModelConfig{16, 50, 64, 3, 4, 16},
      {.kv_heads = 2,
       .intermediate = 24,
       .tied_head = false,
       .rope = {.theta = 100.0}}); // large angles at these short positions
}

struct Batch {
  std::vector<int> in, tg;
};
Batch batch(int B, int T, std::uint64_t seed) {
  Rng64 r(seed);
  Batch b;
  for (int i = 0; i < B * T; ++i) {
    b.in.push_back(int(r.below(50)));
    b.tg.push_back(int(r.below(50)));
  }
  return b;
}
std::vector<float> random_params(const ModelConfig& c, std::uint64_t seed) {
  auto p = gpt2_init(c, seed);
  Rng64 r(seed + 1);
  for (auto& x : p) x += float(r.normal() * 0.05); // biases and LN away from 0/1
  return p;
}

class CpuEngine : public ::testing::TestWithParam<ModelConfig> {
 protected:
  ModelConfig cfg() const { return GetParam(); }
};
std::vector<float> grads_of(Engine& e) { return e.flat_grads(); }
} // namespace

TEST_P(CpuEngine, GradientMatchesFiniteDifferences) {
  const auto c = cfg();
  auto e = make_cpu_engine(c, StageSpec::whole(c), 2, 8, 1);
  auto p = random_params(c, 3);
  e->set_params(p);
  const auto b = batch(2, 8, 11);
  e->zero_grad();
  e->forward(0, b.in.data(), b.tg.data(), 2, 8);
  e->backward(0, 1.0f);
  const auto g = grads_of(*e);
  const ParamLayout lay(c);
  // Check the largest-gradient elements of every tensor (float FD: h = 1e-2,
  // truncation error O(h^2); tolerance 3% relative or 2e-4 absolute).
  int checked = 0, present = 0;
  for (int k = 0; k < kNumParamTensors; ++k) {
    if (lay.sizes[k] == 0) continue; // a tensor this family lacks
    ++present;
    std::size_t best = lay.offsets[k];
    for (std::size_t i = lay.offsets[k]; i < lay.offsets[k] + lay.sizes[k]; ++i)
      if (std::fabs(g[i]) > std::fabs(g[best])) best = i;
    const float h = 1e-2f, orig = p[best];
    p[best] = orig + h;
    e->set_params(p);
    const double lp = e->eval_loss(b.in.data(), b.tg.data(), 2, 8);
    p[best] = orig - h;
    e->set_params(p);
    const double lm = e->eval_loss(b.in.data(), b.tg.data(), 2, 8);
    p[best] = orig;
    const double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(g[best], fd, std::max(2e-4, 0.03 * std::fabs(fd))) << kParamTensorNames[k];
    ++checked;
  }
  EXPECT_EQ(checked, present);
  EXPECT_EQ(present, c.llama() ? 9 : 16);
}

TEST_P(CpuEngine, GradAccumulationEqualsLargerBatch) {
  const auto c = cfg();
  auto big = make_cpu_engine(c, StageSpec::whole(c), 4, 8, 1);
  auto small = make_cpu_engine(c, StageSpec::whole(c), 2, 8, 1);
  const auto p = random_params(c, 4);
  big->set_params(p);
  small->set_params(p);
  const auto b = batch(4, 8, 12);
  big->zero_grad();
  const float L = big->forward(0, b.in.data(), b.tg.data(), 4, 8);
  big->backward(0, 1.0f);
  small->zero_grad();
  float l2 = 0;
  for (int k = 0; k < 2; ++k) {
    l2 += small->forward(0, b.in.data() + k * 16, b.tg.data() + k * 16, 2, 8) / 2;
    small->backward(0, 0.5f);
  }
  EXPECT_NEAR(L, l2, 1e-5 * std::fabs(L));
  const auto g1 = grads_of(*big), g2 = grads_of(*small);
  double maxd = 0, maxg = 0;
  for (std::size_t i = 0; i < g1.size(); ++i) {
    maxd = std::max(maxd, double(std::fabs(g1[i] - g2[i])));
    maxg = std::max(maxg, double(std::fabs(g1[i])));
  }
  EXPECT_LT(maxd, 1e-5 * maxg);
}

TEST_P(CpuEngine, PipelineStagesComposeToTheWholeModel) {
  const auto c = cfg();
  auto whole = make_cpu_engine(c, StageSpec::whole(c), 2, 8, 2);
  auto s0 = make_cpu_engine(c, StageSpec{0, 1, true, false}, 2, 8, 2);
  auto s1 = make_cpu_engine(c, StageSpec{1, 3, false, true}, 2, 8, 2);
  const auto p = random_params(c, 5);
  for (auto* e : {whole.get(), s0.get(), s1.get()}) {
    e->set_params(p);
    e->zero_grad();
  }
  const auto b = batch(2, 8, 13);
  const float L = whole->forward(1, b.in.data(), b.tg.data(), 2, 8);
  whole->backward(1, 1.0f);
  s0->forward(1, b.in.data(), nullptr, 2, 8);
  auto out = s0->output_act(1), in = s1->input_act(1);
  ASSERT_EQ(out.count, std::size_t(2 * 8 * 16));
  std::fill_n(static_cast<float*>(in.data), in.count, 0.0f);
  std::copy_n(static_cast<float*>(out.data), out.count, static_cast<float*>(in.data));
  const float L1 = s1->forward(1, nullptr, b.tg.data(), 2, 8);
  EXPECT_EQ(L, L1);
  s1->backward(1, 1.0f);
  auto gi = s1->input_grad(1), go = s0->output_grad(1);
  std::copy_n(static_cast<float*>(gi.data), out.count, static_cast<float*>(go.data));
  s0->backward(1, 1.0f);
  const auto gw = grads_of(*whole), g0 = grads_of(*s0), g1 = grads_of(*s1);
  const ParamLayout lay(c);
  // Every element's gradient lives on exactly the stage that owns it; a tied
  // wte is the sum of the first stage's (embedding) and last stage's
  // (classifier).
  for (std::size_t i = 0; i < gw.size(); ++i) EXPECT_NEAR(gw[i], g0[i] + g1[i], 1e-6f) << i;
  // Ownership: the norm counts wte once.
  const double n0 = s0->grad_sum_squares(0, lay.total), n1 = s1->grad_sum_squares(0, lay.total);
  EXPECT_GT(n0, 0);
  EXPECT_GT(n1, 0);
}

// --recompute 1 and 2 keep the GeLU / LayerNorm outputs in one shared buffer
// and recompute them in the backward: losses, gradients and the parameters
// after AdamW are bit-identical to storing everything, also with two
// micro-batches in flight (the backward of slot 0 runs after the forward of
// slot 1 has overwritten the shared buffers), and activation memory shrinks
// by exactly the buffers no longer stored per layer.
TEST_P(CpuEngine, RecomputeIsBitIdenticalAndSmaller) {
  const auto c = cfg();
  const int B = 2, T = 8, N = B * T, Lc = c.num_layers, C = c.channels;
  const auto p = random_params(c, 21);
  const auto b0 = batch(B, T, 31), b1 = batch(B, T, 32);
  struct Result {
    std::vector<float> losses, grads, params;
    MemoryUse mem;
  };
  auto run = [&](int rc) {
    auto e = make_engine(c, StageSpec::whole(c), B, T, EngineOptions{"cpu", "fp32", 0, rc, 2});
    e->set_params(p);
    Result r;
    for (int step = 1; step <= 2; ++step) {
      e->zero_grad();
      r.losses.push_back(e->forward(0, b0.in.data(), b0.tg.data(), B, T));
      r.losses.push_back(e->forward(1, b1.in.data(), b1.tg.data(), B, T));
      e->backward(0, 0.5f);
      e->backward(1, 0.5f);
      if (step == 1) r.grads = grads_of(*e);
      e->adamw(AdamWConfig{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f}, 1e-2f, step, 0, e->layout().total);
    }
    r.params.resize(e->layout().total);
    e->get_params(r.params);
    r.mem = e->memory_use();
    return r;
  };
  const Result r0 = run(0), r1 = run(1), r2 = run(2);
  for (const Result* r : {&r1, &r2}) {
    EXPECT_EQ(r0.losses, r->losses);
    EXPECT_EQ(r0.grads, r->grads);
    EXPECT_EQ(r0.params, r->params);
  }
  double gmax = 0;
  for (float g : r0.grads) gmax = std::max(gmax, double(std::fabs(g)));
  EXPECT_GT(gmax, 0.0); // the comparison above compared real gradients
  const std::size_t f = sizeof(float), NC = std::size_t(N) * C, slots = 2,
                    NH = std::size_t(N) * c.hidden();
  // recompute 1: the activation output (N x hidden per layer per slot) no
  // longer stored; one shared buffer of that size.
  EXPECT_EQ(r0.mem.activations - r1.mem.activations, slots * Lc * NH * f);
  EXPECT_EQ(r1.mem.scratch - r0.mem.scratch, NH * f);
  // recompute 2: also ln1 and ln2 (2NC per layer per slot); one shared NC buffer.
  EXPECT_EQ(r1.mem.activations - r2.mem.activations, slots * Lc * 2 * NC * f);
  EXPECT_EQ(r2.mem.scratch - r1.mem.scratch, NC * f);
  EXPECT_THROW(make_engine(c, StageSpec::whole(c), B, T, EngineOptions{"cpu", "fp32", 0, 3, 1}),
               std::invalid_argument);
}

// A token or target id outside the vocabulary never reaches wte or the logits
// (vocabulary 50, padded 64: ids 50..63 are padding rows, not tokens); the CPU
// engine refuses it as the CUDA engine does (check_token_ids).
// The trainer's one-sync step (begin_step .. end_step: the loss summed, the
// norm computed and the gradient clipped in engine memory) gives the same bits
// as the plain step that reads each value, with clipping on and off.
TEST_P(CpuEngine, OneSyncStepMatchesPlainStep) {
  const auto c = cfg();
  step_check::expect_one_sync_steps_match_plain(
      [&] { return make_cpu_engine(c, StageSpec::whole(c), 2, 16, 2); }, c, 3, [](int, bool) {});
}

TEST_P(CpuEngine, TokenIdsOutsideTheVocabularyAreRefused) {
  const ModelConfig c = cfg();
  auto e = make_cpu_engine(c, StageSpec::whole(c), 1, 4, 1, 0);
  e->set_params(random_params(c, 3));
  const std::vector<int> ok = {1, 2, 3, 49};
  EXPECT_TRUE(std::isfinite(e->forward(0, ok.data(), ok.data(), 1, 4)));
  for (int bad : {50, 63, 64, -1, 1 << 30}) {
    std::vector<int> in = ok;
    in[2] = bad;
    EXPECT_THROW(e->forward(0, in.data(), ok.data(), 1, 4), std::out_of_range) << bad;
    EXPECT_THROW(e->forward(0, ok.data(), in.data(), 1, 4), std::out_of_range) << bad;
  }
}

// The engine allocates what the memory plan says (the plan is what
// --memory-plan prints), per stage.
TEST_P(CpuEngine, AllocationFollowsTheMemoryPlan) {
  const auto c = cfg();
  for (const StageSpec st : {StageSpec::whole(c), StageSpec{0, 1, true, false},
                             StageSpec{1, 2, false, false}, StageSpec{2, 3, false, true}}) {
    auto e = make_engine(c, st, 2, 8, EngineOptions{"cpu", "fp32", 0, 1, 2});
    const MemoryPlan plan = plan_memory(c, st, 2, 8, "cpu", "fp32", 1, 2);
    const MemoryUse u = e->memory_use();
    EXPECT_EQ(u.params, plan.params);
    EXPECT_EQ(u.grads, plan.grads);
    EXPECT_EQ(u.optimizer, plan.optimizer);
    EXPECT_EQ(u.activations, plan.activations);
    EXPECT_EQ(u.scratch, plan.scratch);
  }
}

// Under ZeRO-1 the engine pads its parameters and gradients to dp shards and,
// once sharded, keeps the moments of its shard only: the plan of the largest
// shard (rank 0's).
TEST_P(CpuEngine, ZeroShardFollowsTheMemoryPlan) {
  const auto c = cfg();
  const StageSpec st = StageSpec::whole(c);
  for (int dp : {2, 3}) {
    auto e = make_engine(c, st, 2, 8, EngineOptions{"cpu", "fp32", 0, 1, 2, dp});
    const std::size_t S = e->state().size;
    const std::size_t chunk = (S + dp - 1) / dp;
    e->shard_optimizer(0, chunk);
    const MemoryPlan plan = plan_memory(c, st, 2, 8, "cpu", "fp32", 1, 2, dp);
    const MemoryUse u = e->memory_use();
    EXPECT_EQ(u.params, plan.params) << dp;
    EXPECT_EQ(u.grads, plan.grads) << dp;
    EXPECT_EQ(u.optimizer, plan.optimizer) << dp;
    EXPECT_EQ(u.grads, chunk * dp * sizeof(float)) << dp;
    // The padding is not state: parameters and gradients go in and out at
    // their own sizes.
    const auto p = random_params(c, 5);
    e->set_params(p);
    std::vector<float> back(p.size()), g(S);
    e->get_params(back);
    EXPECT_EQ(back, p) << dp;
    e->get_grads(g);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, CpuEngine, ::testing::Values(gpt2_cfg(), llama_cfg()),
                         [](const auto& info) { return info.param.llama() ? "llama" : "gpt2"; });

// A pipeline stage keeps gradients and AdamW moments only for what it owns:
// three stages of a three-layer model together hold one model's worth, plus
// the tied embedding a second time (first and last stage); parameters too.
TEST_P(CpuEngine, StageStateFollowsOwnership) {
  const auto c = cfg();
  const ParamLayout lay(c);
  const StageSpec stages[] = {{0, 1, true, false}, {1, 2, false, false}, {2, 3, false, true}};
  std::size_t sum = 0;
  for (const StageSpec& st : stages) {
    auto e = make_cpu_engine(c, st, 2, 8, 1);
    const MemoryUse u = e->memory_use();
    EXPECT_EQ(u.params, e->state().size * sizeof(float));
    EXPECT_EQ(u.grads, e->state().size * sizeof(float));
    EXPECT_EQ(u.optimizer, 2 * e->state().size * sizeof(float));
    EXPECT_LT(e->state().size, lay.total / 2);
    sum += e->state().size;
  }
  EXPECT_EQ(sum, lay.total + (c.tied_head ? lay.sizes[kWte] : 0));
}
