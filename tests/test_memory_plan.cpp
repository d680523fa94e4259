// The engines' memory plan (runtime/model/memory_plan.h), checked
// on the host: the plan is what the CUDA engine allocates, so these are the
// issue's memory targets as far as they can be checked without a GPU.
#include <gtest/gtest.h>

#include <stdexcept>

#include "runtime/model/config.h"
#include "runtime/model/memory_plan.h"

using namespace myelin;

namespace {
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
// An "80 GB" H100 reports 79.6 GiB; leave 1 GiB for the CUDA context and
// allocator fragmentation.
constexpr double kUsable80 = 78.6 * kGiB;

ModelConfig preset(const char* name) {
  ModelConfig c;
  EXPECT_TRUE(model_preset(name, c)) << name;
  return c;
}
} // namespace

TEST(MemoryPlan, Presets) {
  ModelConfig c;
  ASSERT_TRUE(model_preset("124M", c));
  EXPECT_EQ(ParamLayout(c).total, 124475904u); // llm.c's count for GPT-2 124M (Vp 50304)
  ASSERT_TRUE(model_preset("1.5B", c));
  EXPECT_EQ(c.num_layers, 48);
  EXPECT_EQ(c.channels, 1600);
  EXPECT_FALSE(model_preset("7B", c));
}

TEST(MemoryPlan, ActivationsPerLayerFollowTheRecomputeLevel) {
  const auto c = preset("124M");
  const int B = 4, T = 256;
  const std::size_t NC = std::size_t(B) * T * c.channels, L = c.num_layers;
  const auto p0 = plan_memory(c, StageSpec::whole(c), B, T, "cuda", "bf16", 0, 1);
  const auto p1 = plan_memory(c, StageSpec::whole(c), B, T, "cuda", "bf16", 1, 1);
  const auto p2 = plan_memory(c, StageSpec::whole(c), B, T, "cuda", "bf16", 2, 1);
  auto per_layer = [&](const SlotSizes& s) {
    return (s.ln1 + s.qkv + s.atty + s.res2 + s.ln2 + s.fch + s.fch_gelu + s.res3) / (L * NC);
  };
  EXPECT_EQ(per_layer(p0.slot), 16u);
  EXPECT_EQ(per_layer(p1.slot), 12u);
  EXPECT_EQ(per_layer(p2.slot), 10u);
  EXPECT_EQ(p0.activations - p1.activations, L * 4 * NC * 2);
  EXPECT_EQ(p1.activations - p2.activations, L * 2 * NC * 2);
  EXPECT_EQ(p1.shared.gelu, 4 * NC);
  EXPECT_EQ(p2.shared.ln, NC);
  // bf16: fp32 master + bf16 copy; fp32: master only.
  const std::size_t P = ParamLayout(c).total;
  EXPECT_EQ(p0.params, P * 6);
  EXPECT_EQ(plan_memory(c, StageSpec::whole(c), B, T, "cuda", "fp32", 0, 1).params, P * 4);
  EXPECT_EQ(p0.optimizer, P * 8);
  // Two slots hold twice the activations; a middle pipeline stage has no
  // logits and no embedding inputs.
  EXPECT_EQ(plan_memory(c, StageSpec::whole(c), B, T, "cuda", "bf16", 0, 2).activations,
            2 * p0.activations);
  const auto mid = plan_memory(c, StageSpec{4, 8, false, false}, B, T, "cuda", "bf16", 0, 1);
  EXPECT_EQ(mid.slot.logits, 0u);
  EXPECT_EQ(mid.slot.tokens, 0u);
  EXPECT_EQ(mid.slot.qkv, 4 * 3 * NC);
  EXPECT_THROW(plan_memory(c, StageSpec::whole(c), B, T, "cuda", "fp16", 0, 1),
               std::invalid_argument);
  EXPECT_THROW(plan_memory(c, StageSpec::whole(c), B, T, "cuda", "bf16", 3, 1),
               std::invalid_argument);
}

// The targets: GPT-2 124M at micro-batch 64 x 1024 (bf16) and GPT-2
// 1.5B (bf16, recompute 2, micro-batch 8 x 1024) fit on an 80 GB card.
TEST(MemoryPlan, Gpt2TargetsFitOn80GB) {
  const auto small = preset("124M"), xl = preset("1.5B");
  const auto p124 = plan_memory(small, StageSpec::whole(small), 64, 1024, "cuda", "bf16", 0, 1);
  EXPECT_LT(double(p124.total()), kUsable80) << p124.describe();
  const auto p15 = plan_memory(xl, StageSpec::whole(xl), 8, 1024, "cuda", "bf16", 2, 1);
  EXPECT_LT(double(p15.total()), kUsable80) << p15.describe();
  // ... and the plan is not vacuous: 1.5B at micro-batch 64 does not fit.
  const auto too_big = plan_memory(xl, StageSpec::whole(xl), 64, 1024, "cuda", "bf16", 2, 1);
  EXPECT_GT(double(too_big.total()), kUsable80) << too_big.describe();
  std::printf("124M  64x1024 bf16 rc0: %s\n1.5B   8x1024 bf16 rc2: %s\n", p124.describe().c_str(),
              p15.describe().c_str());
}

// Memory follows ownership: GPT-2 1.5B with --pp 4 plans each stage's AdamW
// state and gradients for its own layers (plus the embedding on the first
// and last stage), about a quarter of the whole model's, not all of it.
TEST(MemoryPlan, PipelineStagesHoldTheirShareOfTheOptimizerState) {
  const auto xl = preset("1.5B");
  const ParamLayout lay(xl);
  const auto whole = plan_memory(xl, StageSpec::whole(xl), 8, 1024, "cuda", "bf16", 2, 1);
  EXPECT_EQ(whole.optimizer, lay.total * 8);
  std::size_t sum = 0;
  for (int s = 0; s < 4; ++s) {
    const StageSpec st{12 * s, 12 * (s + 1), s == 0, s == 3};
    const auto p = plan_memory(xl, st, 8, 1024, "cuda", "bf16", 2, 4);
    EXPECT_LT(double(p.optimizer), 0.30 * double(whole.optimizer)) << "stage " << s;
    EXPECT_GT(double(p.optimizer), 0.20 * double(whole.optimizer)) << "stage " << s;
    EXPECT_EQ(p.grads * 2, p.optimizer);
    EXPECT_EQ(p.params * 4, p.optimizer * 3); // fp32 master + bf16 copy of the same slice
    sum += p.optimizer;
    std::printf("1.5B --pp 4 stage %d: %s\n", s, p.describe().c_str());
  }
  // The tied embedding is held by the first and the last stage.
  EXPECT_EQ(sum, whole.optimizer + lay.sizes[kWte] * 8);
}

// ZeRO-1 over dp ranks keeps the AdamW moments of one shard (the largest,
// ceil(S / dp) elements); parameters and gradients grow by the padding to dp
// shards (fewer than dp elements), which lets the collectives run in place.
TEST(MemoryPlan, ZeroShardsTheOptimizerState) {
  const auto xl = preset("1.5B");
  const StageSpec st{12, 24, false, false};
  const auto plain = plan_memory(xl, st, 8, 1024, "cuda", "bf16", 2, 4);
  const std::size_t S = plain.grads / sizeof(float);
  for (int dp : {2, 3, 8}) {
    const auto z = plan_memory(xl, st, 8, 1024, "cuda", "bf16", 2, 4, dp);
    const std::size_t chunk = (S + dp - 1) / dp;
    EXPECT_EQ(z.optimizer, 2 * chunk * sizeof(float)) << dp;
    // The whole stage's gradient is still reduced: padded to dp chunks.
    EXPECT_EQ(z.grads, chunk * dp * sizeof(float)) << dp;
    EXPECT_LT(z.grads - plain.grads, dp * sizeof(float)) << dp;
    EXPECT_EQ(z.params - plain.params, z.grads - plain.grads) << dp;
    EXPECT_EQ(z.activations, plain.activations) << dp;
  }
  EXPECT_EQ(plan_memory(xl, st, 8, 1024, "cuda", "bf16", 2, 4, 1).optimizer, plain.optimizer);
}

// The Llama presets plan too, with their own widths (GQA qkv, SwiGLU).
TEST(MemoryPlan, LlamaPresets) {
  const auto small = preset("llama-135M"), big = preset("llama-1B");
  EXPECT_NEAR(double(ParamLayout(small).total), 134.5e6, 1e6);  // SmolLM-135M, tied
  EXPECT_NEAR(double(ParamLayout(big).total), 1.236e9, 0.01e9); // Llama 3.2 1B, tied
  const auto p = plan_memory(big, StageSpec::whole(big), 4, 2048, "cuda", "bf16", 0, 1);
  const std::size_t N = 4 * 2048, C = 2048, L = 16;
  EXPECT_EQ(p.slot.qkv, L * N * (32 + 2 * 8) * 64);
  EXPECT_EQ(p.slot.fch, L * N * 2 * 8192);
  EXPECT_EQ(p.slot.fch_gelu, L * N * 8192);
  EXPECT_EQ(p.slot.ln_mean, 0u); // RMSNorm keeps no mean
  EXPECT_EQ(p.slot.ln_rstd, L * N);
  EXPECT_EQ(p.shared.rope, std::size_t(2048) * 32);
  EXPECT_LT(double(p.total()), kUsable80) << p.describe();
  (void)C;
}
