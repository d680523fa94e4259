// The coordinator's round closing through PoolState (no sockets, real
// SQLite, real training): a replayed upload is refused (409) and recorded as
// rejected with a failed trial for the rating; requests are answered while a
// round is being scored and replayed (the heavy work runs outside the state
// lock); ledger rows carry weight, score deltas, replay difference and rating.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>

#include "runtime/data/shard.h"
#include "runtime/io/model_any.h"
#include "runtime/io/model_file.h"
#include "runtime/model/init.h"
#include "runtime/pool/compress.h"
#include "runtime/pool/inner_train.h"
#include "runtime/pool/state.h"
#include "runtime/pool/tokens.h"
#include "runtime/pool/validate.h"
#include "tests/common/llama_config.h"

using nlohmann::json;
using namespace myelin;
using namespace myelin::pool;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  std::string dir;
  std::unique_ptr<PoolState> state;
  TokenInfo who;
  explicit Fixture(const json& extra) {
    dir = (fs::temp_directory_path() /
           ("myelin_pool_close_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name()))
              .string();
    fs::remove_all(dir);
    fs::create_directories(dir + "/data");
    std::vector<std::uint16_t> toks(60000);
    for (std::size_t i = 0; i < toks.size(); ++i) toks[i] = std::uint16_t((i * 7 + i / 13) % 256);
    write_shard(dir + "/data/train_00000.bin", toks);
    state = std::make_unique<PoolState>(dir + "/st", 30, true);
    std::string secret;
    {
      Db db(db_path(dir + "/st"));
      secret = create_token(db, "volunteers", false);
    }
    who = *state->authenticate(secret);
    json job = {{"name", "close"},
                {"model",
                 {{"layers", 1},
                  {"heads", 2},
                  {"channels", 32},
                  {"vocab", 256},
                  {"max_seq_len", 32},
                  {"seed", 3u}}},
                {"train_data", dir + "/data/train_*.bin"},
                {"batch_size", 4},
                {"seq_len", 32},
                {"rounds", 3},
                {"min_contributors", 1},
                {"max_contributors", 1}};
    job.update(extra);
    state->submit_job(job);
  }
  ~Fixture() { fs::remove_all(dir); }
  // Joins, takes the round's assignment and trains it honestly.
  std::pair<Assignment, std::vector<float>> honest(std::int64_t& cid,
                                                   const std::string& name = "c") {
    JoinRequest jr;
    jr.name = name;
    cid = state->join(who, jr).contributor_id;
    const Assignment a = *state->work(who, cid).assignment;
    const std::string model = state->model_file(a.job, a.round);
    const auto global = load_model(model).params;
    InnerTrainer t(
        inner_train_options(a.train, a.slot, a.slots, model, dir + "/data/train_*.bin", "cpu", 1));
    const InnerResult r =
        t.run(global, a.batch_position, a.round * a.inner_steps, int(a.inner_steps));
    std::vector<float> g(global.size());
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = global[i] - r.local[i];
    return {a, g};
  }
  std::uint64_t model_sum(std::int64_t round) {
    return params_checksum(load_model(state->model_file(1, round)).params);
  }
};

UploadMeta meta(const Assignment& a, std::int64_t cid) {
  UploadMeta m;
  m.job = a.job, m.round = a.round, m.contributor = cid;
  m.tokens = 1, m.compute_s = 0;
  return m;
}

} // namespace

TEST(PoolClose, ReplayedAndForeignUploadsAreRefusedAndRecorded) {
  Fixture f(json{{"inner_steps", 2}, {"max_contributors", 2}});
  std::int64_t c1 = 0, c2 = 0;
  auto [a, g] = f.honest(c1, "c1");
  auto [b, gb] = f.honest(c2, "c2");
  const std::string body0 = encode(g, {a.job, a.round, f.model_sum(0)}, {Codec::kInt8});
  EXPECT_EQ(f.state->upload(f.who, meta(a, c1), body0)["status"], "pending");
  // An upload that did not start from this round's model: refused (409) and
  // recorded as rejected, so the round does not wait for it.
  try {
    f.state->upload(f.who, meta(b, c2), encode(gb, {b.job, b.round, 12345}, {Codec::kInt8}));
    FAIL() << "wrong model checksum accepted";
  } catch (const Refused& e) {
    EXPECT_EQ(e.status(), 409);
    EXPECT_NE(std::string(e.what()).find("model checksum"), std::string::npos) << e.what();
  }
  f.state->tick(); // round 0 closes with c1's upload
  auto led = f.state->ledger_json(1);
  ASSERT_EQ(led.size(), 2u);
  for (const auto& r : led) {
    if (r["contributor"] == "c2") {
      EXPECT_EQ(r["status"], "rejected");
      EXPECT_EQ(r["weight"], 0.0);
    } else {
      EXPECT_EQ(r["status"], "accepted") << r.dump();
      EXPECT_EQ(r["weight"], 1.0);
    }
  }
  // Round 1: re-sending round 0's upload is refused as a replay, recorded.
  const Assignment a1 = *f.state->work(f.who, c1).assignment;
  ASSERT_EQ(a1.round, 1);
  try {
    f.state->upload(f.who, meta(a1, c1), body0);
    FAIL() << "replayed upload accepted";
  } catch (const Refused& e) {
    EXPECT_EQ(e.status(), 409);
    EXPECT_NE(std::string(e.what()).find("round 0"), std::string::npos) << e.what();
  }
  led = f.state->ledger_json(1);
  ASSERT_EQ(led.size(), 3u);
  EXPECT_NE(led[2]["reason"].get<std::string>().find("replayed"), std::string::npos);
  // Ratings: c1 one success then one failure, c2 one failure (prior Beta(1, 1),
  // forgetting 0.9).
  const StatusResponse st = f.state->status_json().get<StatusResponse>();
  ASSERT_EQ(st.contributors.size(), 2u);
  EXPECT_NEAR(st.contributors[0].rating, 1.9 / (1.9 + 2.0), 1e-9);
  EXPECT_NEAR(st.contributors[1].rating, 1.0 / 3.0, 1e-9);
}

TEST(PoolClose, AnswersWhileARoundIsScoredAndRecordsTheVerdict) {
  // Every upload replayed (replay_prob 1) over many inner steps: a slow close.
  Fixture f(json{{"inner_steps", 150}, {"replay_prob", 1.0}, {"compression", "none"}});
  std::int64_t cid = 0;
  auto [a, g] = f.honest(cid);
  const auto r = f.state->upload(f.who, meta(a, cid),
                                 encode(g, {a.job, a.round, f.model_sum(0)}, {Codec::kNone}));
  EXPECT_EQ(r["status"], "pending");
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    f.state->tick();
    closed = true;
  });
  // While the round is closing, requests that take the state lock are
  // answered (before the close ends).
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  int answered_during = 0;
  for (int i = 0; i < 20 && !closed; ++i) {
    f.state->heartbeat(f.who, HeartbeatRequest{cid, "waiting"});
    (void)f.state->status_json();
    if (!closed) ++answered_during;
  }
  closer.join();
  EXPECT_GT(answered_during, 0);
  const auto led = f.state->ledger_json(1);
  ASSERT_EQ(led.size(), 1u);
  EXPECT_EQ(led[0]["status"], "accepted") << led[0].dump();
  EXPECT_EQ(led[0]["weight"], 1.0);
  // The honest replay agrees to float rounding (fp32 upload; the
  // coordinator trains with all cores, the contributor here with one, so
  // the sums are ordered differently): far below the 0.05 tolerance.
  EXPECT_LT(led[0]["replay_diff"].get<double>(), 1e-4);
  EXPECT_TRUE(led[0].contains("score_assigned"));
  EXPECT_TRUE(led[0].contains("rating"));
}

// A job's init_checkpoint may be Hugging Face safetensors (a file or its
// folder), GPT-2 or Llama: round 0's model holds exactly its parameters and
// its whole config, also for a coordinator that reopens the job.
TEST(PoolJob, InitCheckpointTakesSafetensors) {
  const std::string dir =
      (fs::temp_directory_path() / ("myelin_pool_hf_" + std::to_string(getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir + "/data");
  fs::create_directories(dir + "/hf");
  std::vector<std::uint16_t> toks(4000);
  for (std::size_t i = 0; i < toks.size(); ++i) toks[i] = std::uint16_t((i * 7) % 200);
  write_shard(dir + "/data/train_00000.bin", toks);
  ModelConfig gpt2{32, 200, 256, 1, 2, 32};
  cpu::RopeParams rope;
  rope.llama3 = true;
  rope.original_max_position = 16;
  const ModelConfig llama = test_util::llama_config(
      gpt2, {.kv_heads = 1, .intermediate = 48, .tied_head = false, .rope = rope});
  int n = 0;
  for (const ModelConfig& cfg : {gpt2, llama}) {
    std::vector<float> params(ParamLayout(cfg).total);
    for (std::size_t i = 0; i < params.size(); ++i) params[i] = float(int(i % 89) - 44) / 128.0f;
    const ParamLayout lay(cfg);
    for (const int k : {int(kWte), int(kLmHead)}) // padding rows are not stored
      if (lay.sizes[k] > 0)
        std::fill(params.begin() + long(lay.offsets[k] + 200 * 32),
                  params.begin() + long(lay.offsets[k] + lay.sizes[k]), 0.0f);
    fs::remove_all(dir + "/hf");
    fs::create_directories(dir + "/hf");
    save_any_model(dir + "/hf/model.safetensors", cfg, params, false);
    std::vector<std::int64_t> ids;
    {
      PoolState state(dir + "/st", 30, true);
      for (const std::string& ck : {dir + "/hf/model.safetensors", dir + "/hf"}) {
        const json job = {{"name", "hf" + std::to_string(n++)},
                          {"init_checkpoint", ck},
                          {"train_data", dir + "/data/train_*.bin"},
                          {"batch_size", 4},
                          {"seq_len", 32},
                          {"rounds", 1},
                          {"min_contributors", 1},
                          {"max_contributors", 1}};
        const std::int64_t id = state.submit_job(job);
        ids.push_back(id);
        const ModelFile m = load_model(state.model_file(id, 0));
        EXPECT_EQ(m.config.describe(), cfg.describe());
        EXPECT_EQ(m.config.rope.llama3, cfg.rope.llama3);
        ASSERT_EQ(m.params.size(), params.size());
        EXPECT_EQ(std::memcmp(m.params.data(), params.data(), params.size() * 4), 0);
      }
    }
    // Reopened: the job's shape comes from round 0's model file.
    PoolState reopened(dir + "/st", 30, true);
    for (const std::int64_t id : ids) EXPECT_EQ(reopened.job_config(id).describe(), cfg.describe());
  }
  fs::remove_all(dir);
}

// A sparse job: the assignment carries its codec settings, an upload made
// with other settings is refused (400) before anything is recorded, and one
// made with the job's settings is taken and closes the round. (Replays and
// scoring are off: this test is about the codec settings alone.)
TEST(PoolClose, SparseJobRefusesOtherCodecSettings) {
  Fixture f(json{{"inner_steps", 2},
                 {"compression", "sparse"},
                 {"topk_density", 0.05},
                 {"value_bits", 4},
                 {"chunk_size", 1024},
                 {"replay_prob", 0.0},
                 {"score_batches", 0}});
  std::int64_t cid = 0;
  const auto work = f.honest(cid); // (no structured binding: the lambda below uses them)
  const Assignment& a = work.first;
  const std::vector<float>& g = work.second;
  CodecParams want;
  want.codec = Codec::kSparse, want.density = 0.05, want.value_bits = 4, want.chunk = 1024;
  EXPECT_EQ(a.codec, want);
  EXPECT_TRUE(a.error_feedback);
  const UploadOrigin o{a.job, a.round, f.model_sum(0)};
  auto refused = [&](const CodecParams& p, const std::string& what) {
    try {
      f.state->upload(f.who, meta(a, cid), encode(g, o, p));
      ADD_FAILURE() << what << ": accepted";
    } catch (const Refused& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_NE(std::string(e.what()).find("codec settings"), std::string::npos) << e.what();
    }
  };
  CodecParams p = want;
  p.value_bits = 8;
  refused(p, "8-bit values");
  p = want, p.chunk = 2048;
  refused(p, "another chunk size");
  p = want, p.density = 0.1;
  refused(p, "more kept per chunk");
  refused({Codec::kInt8}, "int8");
  EXPECT_TRUE(f.state->ledger_json(1).empty()); // nothing recorded
  p = want, p.density = 0.02;                   // fewer kept is fine
  std::vector<float> residual(g.size(), 0.0f), sent;
  const std::string body = encode_with_feedback(g, residual, o, p, &sent);
  EXPECT_LT(body.size(), 4 * g.size() / 20);
  const auto r = f.state->upload(f.who, meta(a, cid), body);
  EXPECT_EQ(r["status"], "pending") << r.dump();
  EXPECT_NEAR(r["norm"].get<double>(), l2_norm(sent), 1e-9 * l2_norm(sent));
  f.state->tick();
  const auto led = f.state->ledger_json(1);
  ASSERT_EQ(led.size(), 1u);
  EXPECT_EQ(led[0]["status"], "accepted") << led[0].dump();
}
