// Judging uploads without processes: the scoring verdict, the reputation
// arithmetic, the replay draw and comparison, the lower norm bound, and the
// inner training's determinism (a replay equals the run it checks).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "runtime/data/shard.h"
#include "runtime/io/model_file.h"
#include "runtime/model/init.h"
#include "runtime/pool/inner_train.h"
#include "runtime/pool/job.h"
#include "runtime/pool/rating.h"
#include "runtime/pool/score.h"
#include "runtime/pool/validate.h"
#include "runtime/util/error.h"

using namespace myelin;
using namespace myelin::pool;
namespace fs = std::filesystem;

TEST(PoolScore, VerdictRejectsNoGainAndNoMoreThanOtherRows) {
  ScoreResult honest{2.0, 1.5, 2.0, 1.8}; // own rows -0.5, others -0.2
  EXPECT_EQ(score_verdict(honest, 0), "");
  ScoreResult zero{2.0, 2.0, 2.0, 2.0};
  EXPECT_NE(score_verdict(zero, 0).find("does not lower"), std::string::npos);
  ScoreResult harmful{2.0, 2.3, 2.0, 2.2};
  EXPECT_NE(score_verdict(harmful, 0).find("does not lower"), std::string::npos);
  ScoreResult other_data{2.0, 1.8, 2.0, 1.5}; // helps other rows more than its own
  EXPECT_NE(score_verdict(other_data, 0).find("no more than"), std::string::npos);
  EXPECT_EQ(score_verdict(other_data, 0, 0, false), ""); // error feedback: own rows alone
  ScoreResult tie{2.0, 1.8, 2.0, 1.8};
  EXPECT_NE(score_verdict(tie, 0), "");
  ScoreResult nan{2.0, NAN, 2.0, 1.8};
  EXPECT_NE(score_verdict(nan, 0), "");
  // Within the round's noise a small shortfall passes; far outside it fails.
  ScoreResult close{2.0, 1.79, 2.0, 1.78}; // own 0.21, other 0.22
  EXPECT_EQ(score_verdict(close, 0.01), "");
  EXPECT_NE(score_verdict(harmful, 0.01), "");
  // A settled round (the model fits its own rows no better than others'): an
  // honest upload like the round 9 one that was once rejected (own -0.0117,
  // others +0.0384, noise 0.013) is judged against the round's median
  // own-minus-other difference; one far below the median still fails.
  ScoreResult settled{2.4, 2.4117, 2.4, 2.3616};
  EXPECT_NE(score_verdict(settled, 0.013).find("no more than"), std::string::npos);
  EXPECT_EQ(score_verdict(settled, 0.013, -0.005, true, -0.03), "");
  ScoreResult far_below{2.4, 2.405, 2.4, 2.30}; // own -0.005, others +0.10
  EXPECT_NE(score_verdict(far_below, 0.013, -0.005, true, -0.03).find("no more than"),
            std::string::npos);
  // A positive median difference does not raise the bar above 0.
  EXPECT_EQ(score_verdict(honest, 0, 0, true, 0.5), "");
  // An upload's own standard error counts when the round has no estimate
  // (one or two uploads).
  ScoreResult close_own{2.0, 1.79, 2.0, 1.78, 0.01};
  EXPECT_EQ(score_verdict(close_own, 0), "");
  ScoreResult harmful_own{2.0, 2.3, 2.0, 2.2, 0.01};
  EXPECT_NE(score_verdict(harmful_own, 0), "");
}

TEST(PoolScore, SettledRoundJudgesOwnGainAgainstItsPeers) {
  // Near convergence the round's honest uploads all raise the loss of their
  // two scored batches a little (median gain -0.03): one at -0.04 (own
  // noise 0.012) is not rejected for that, but a sign-flip far below the
  // round still is, and so is the same -0.04 in a round whose median gains.
  ScoreResult settled{2.40, 2.44, 2.40, 2.45, 0.012};
  EXPECT_NE(score_verdict(settled, 0, 0.0), "");
  EXPECT_EQ(score_verdict(settled, 0, -0.03), "");
  EXPECT_NE(score_verdict(settled, 0, 0.02), "");
  ScoreResult flipped{2.40, 2.92, 2.40, 2.80, 0.012};
  EXPECT_NE(score_verdict(flipped, 0, -0.03).find("does not lower"), std::string::npos);
}

TEST(PoolScore, NoiseIsARobustSpread) {
  std::vector<ScoreResult> r;
  for (double d : {0.01, -0.01, 0.02, 0.0, -0.02}) r.push_back({1.0, 0.9 - d, 1.0, 0.9});
  const double honest = score_noise(r);
  EXPECT_NEAR(honest, 1.4826 * 0.01, 1e-9);
  // One wild upload hardly moves it (a mean/variance would explode).
  r.push_back({1.0, 5.0, 1.0, 0.9});
  EXPECT_LT(score_noise(r), 2 * honest);
  EXPECT_EQ(score_noise({r[0], r[1]}), 0.0);
}

TEST(PoolRating, BetaBernoulliWithForgetting) {
  Rating r;
  EXPECT_DOUBLE_EQ(r.mean(), 0.5); // prior Beta(1, 1)
  r = r.updated(1, 0);
  EXPECT_DOUBLE_EQ(r.alpha, 2);
  EXPECT_DOUBLE_EQ(r.mean(), 2.0 / 3.0);
  // A failed replay (4 failures) benches a newcomer at once: 1 / (1 + 5).
  Rating cheat = Rating{}.updated(0, Rating::kReplayFailures);
  EXPECT_NEAR(cheat.mean(), 1.0 / 6.0, 1e-12);
  EXPECT_LT(cheat.mean(), 0.3);
  // Evidence decays toward the prior: after many successes the failure fades
  // and the rating recovers above the bench level.
  int rounds = 0;
  while (cheat.mean() < 0.3) cheat = cheat.updated(1, 0), ++rounds;
  EXPECT_GE(rounds, 1);
  EXPECT_LE(rounds, 4);
  // Steady state of always accepted: alpha -> 1 + 1 / (1 - 0.9) = 11, beta -> 1.
  Rating good;
  for (int i = 0; i < 500; ++i) good = good.updated(1, 0);
  EXPECT_NEAR(good.alpha, 11.0, 1e-9);
  EXPECT_NEAR(good.beta, 1.0, 1e-12);
  EXPECT_NEAR(good.mean(), 11.0 / 12.0, 1e-9);
  // One rejection of a trusted contributor does not bench it.
  EXPECT_GT(good.updated(0, 1).mean(), 0.8);
}

TEST(PoolReplay, DrawIsDeterministicWithTheAskedRate) {
  int hits = 0;
  for (int c = 0; c < 4000; ++c) {
    const bool a = replay_drawn(1, c / 40, c, 0.25, 77);
    EXPECT_EQ(a, replay_drawn(1, c / 40, c, 0.25, 77));
    hits += a;
  }
  EXPECT_NEAR(hits / 4000.0, 0.25, 0.03);
  EXPECT_FALSE(replay_drawn(1, 2, 3, 0.0, 77));
  EXPECT_TRUE(replay_drawn(1, 2, 3, 1.0, 77));
  // Another key draws other uploads: without it the draw cannot be foreseen.
  int same = 0;
  for (int c = 0; c < 4000; ++c)
    same += replay_drawn(1, c / 40, c, 0.25, 77) == replay_drawn(1, c / 40, c, 0.25, 78);
  EXPECT_LT(same, 3000); // independent draws agree on about 62.5%
}

TEST(PoolReplay, SuspicionAndRelativeDifference) {
  const ScoreResult clear{2.0, 1.0, 2.0, 1.8}; // 1.0 vs 0.2
  EXPECT_FALSE(replay_suspicious(0.6, 1.0, 1.0, &clear, 0));
  EXPECT_TRUE(replay_suspicious(0.4, 1.0, 1.0, &clear, 0)); // failed before
  EXPECT_TRUE(replay_suspicious(0.6, 0.3, 1.0, &clear, 0)); // too small (lazy)
  EXPECT_TRUE(replay_suspicious(0.6, 3.0, 1.0, &clear, 0)); // too large (scaled)
  // far below the round's median gain (a random update that got lucky)
  EXPECT_TRUE(replay_suspicious(0.6, 1.0, 1.0, &clear, 3.0));
  EXPECT_FALSE(replay_suspicious(0.6, 1.0, 1.0, &clear, 1.5));
  const ScoreResult thin{2.0, 1.7, 2.0, 1.8}; // 0.3 vs 0.2
  EXPECT_TRUE(replay_suspicious(0.6, 1.0, 1.0, &thin, 0));
  std::vector<float> a = {3, 4}, b = {3, 4};
  EXPECT_EQ(relative_difference(a, b), 0.0);
  b = {3, 4.5f};
  EXPECT_NEAR(relative_difference(a, b), 0.5 / std::sqrt(9 + 20.25), 1e-6);
  EXPECT_TRUE(std::isinf(relative_difference(a, std::vector<float>{0, 0})));
  EXPECT_TRUE(std::isinf(relative_difference(a, std::vector<float>{3})));
}

TEST(PoolValidate, LowerNormBound) {
  NormPolicy pol{10.0, 0.0, 0.25};
  auto v = judge_norms({1.0, 1.1, 0.2, 0.0}, 0, pol);
  EXPECT_EQ(v[0], "");
  EXPECT_EQ(v[1], "");
  EXPECT_NE(v[2].find("below"), std::string::npos);
  EXPECT_NE(v[3].find("below"), std::string::npos);
  // the reference ignores zero uploads: a zero beside one honest upload does
  // not drag it to 0 (the previous rounds' median is used instead)
  EXPECT_DOUBLE_EQ(norm_reference({0.0, 2.0}, 1.5).value, 1.5);
  EXPECT_NE(judge_norms({0.0, 2.0}, 1.5, pol)[0], "");
  EXPECT_DOUBLE_EQ(norm_reference({0.0, 2.0}, 0).value, 0.0);
}

TEST(PoolJob, ScoringFieldsHaveDefaultsAndRanges) {
  nlohmann::json j = {{"train_data", "x_*.bin"}};
  JobSpec s = parse_job(j);
  EXPECT_EQ(s.score_batches, 2);
  EXPECT_DOUBLE_EQ(s.min_norm_factor, 0.25);
  EXPECT_DOUBLE_EQ(s.replay_prob, 0.25);
  EXPECT_DOUBLE_EQ(s.replay_tolerance, 0.05);
  EXPECT_DOUBLE_EQ(s.bench_rating, 0.3);
  for (const auto& [k, v] :
       std::vector<std::pair<std::string, nlohmann::json>>{{"replay_prob", 1.5},
                                                           {"replay_tolerance", 0},
                                                           {"bench_rating", 1},
                                                           {"min_norm_factor", -0.1},
                                                           {"score_batches", -1}}) {
    nlohmann::json b = j;
    b[k] = v;
    try {
      parse_job(b);
      FAIL() << k << " accepted " << v;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("job." + k), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(parse_job(job_to_json(s)).replay_prob, 0.25);
}

// The replay's premise: the same (global model, rows, settings) give the
// same local model bit for bit, whatever the trainer ran before.
TEST(PoolInnerTrain, ReplayIsBitIdenticalAndSeesLaziness) {
  const fs::path dir = fs::temp_directory_path() / ("myelin_inner_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<std::uint16_t> toks(40000);
  for (std::size_t i = 0; i < toks.size(); ++i) toks[i] = std::uint16_t((i * 7 + i / 13) % 256);
  write_shard((dir / "train_00000.bin").string(), toks);
  ModelConfig cfg{32, 256, 256, 2, 2, 32};
  const auto global = gpt2_init(cfg, 5);
  save_model((dir / "model.bin").string(), cfg, global, 3);
  JobSpec spec;
  spec.batch_size = 2, spec.seq_len = 16, spec.inner_steps = 4, spec.rounds = 10;
  spec.max_contributors = 2;
  const TrainSettings t = train_settings(spec);
  const std::string glob = (dir / "train_*.bin").string();
  auto opts = [&](std::int64_t slot) {
    return inner_train_options(t, slot, 2, (dir / "model.bin").string(), glob, "cpu", 1);
  };
  InnerTrainer a(opts(1)), b(opts(1));
  // `a` has trained another round first (AdamW moments, steps): reset anyway.
  (void)a.run(global, 0, 0, 4);
  const InnerResult ra = a.run(global, 8, 4, 4), rb = b.run(global, 8, 4, 4);
  ASSERT_EQ(ra.local.size(), global.size());
  EXPECT_EQ(ra.local, rb.local);
  std::vector<float> ga(global.size()), gl(global.size()), go(global.size());
  const InnerResult lazy = b.run(global, 8, 4, 1);
  InnerTrainer other(opts(0));
  const InnerResult od = other.run(global, 8, 4, 4);
  for (std::size_t i = 0; i < global.size(); ++i) {
    ga[i] = global[i] - ra.local[i];
    gl[i] = global[i] - lazy.local[i];
    go[i] = global[i] - od.local[i];
  }
  EXPECT_GT(relative_difference(gl, ga), 0.05); // fewer steps
  EXPECT_GT(relative_difference(go, ga), 0.05); // other rows
  fs::remove_all(dir);
}
