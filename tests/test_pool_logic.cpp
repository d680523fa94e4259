// Pool arithmetic without processes: the pseudo-gradient codec, the model
// delta codec, the outer
// optimizer, the trust checks, job parsing and the data position helper.
#include <gtest/gtest.h>

#include <cmath>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

#include "runtime/pool/compress.h"
#include "runtime/pool/job.h"
#include "runtime/pool/outer_opt.h"
#include "runtime/pool/tokens.h"
#include "runtime/pool/validate.h"
#include "runtime/util/error.h"

using namespace myelin;
using namespace myelin::pool;

namespace {
const UploadOrigin kOrigin{3, 5, 0x1234abcd5678ef00ull};
std::vector<float> ramp(std::size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.37f * float(i)) * float(1 + i % 7);
  return v;
}
} // namespace

TEST(PoolCompress, NoneRoundTripsExactly) {
  const auto x = ramp(1000);
  const std::string b = encode(x, kOrigin, {Codec::kNone});
  EXPECT_EQ(b.size(), kWireHeaderBytes + 4 * x.size());
  const Decoded d = decode(b, x.size());
  EXPECT_EQ(d.codec, Codec::kNone);
  EXPECT_EQ(d.values, x);
}

TEST(PoolCompress, Int8ErrorWithinHalfAStepPerBlock) {
  const std::size_t n = 1000, block = 64;
  const auto x = ramp(n, 0.01f);
  const std::string b = encode(x, kOrigin, {Codec::kInt8, block});
  EXPECT_EQ(b.size(), kWireHeaderBytes + 4 * ((n + block - 1) / block) + n);
  EXPECT_LT(b.size(), 4 * n / 3); // at least 3x smaller than fp32
  const Decoded d = decode(b, n);
  for (std::size_t lo = 0; lo < n; lo += block) {
    float mx = 0;
    for (std::size_t i = lo; i < std::min(n, lo + block); ++i) mx = std::max(mx, std::fabs(x[i]));
    const float step = mx / 127.0f;
    for (std::size_t i = lo; i < std::min(n, lo + block); ++i)
      EXPECT_LE(std::fabs(d.values[i] - x[i]), 0.5f * step * 1.001f + 1e-12f) << i;
  }
}

TEST(PoolCompress, ZeroBlockAndNonFiniteBlock) {
  std::vector<float> x(300, 0.0f);
  x[280] = NAN;
  x[10] = 0.0f;
  const Decoded d = decode(encode(x, kOrigin, {Codec::kInt8, 128}), x.size());
  for (std::size_t i = 0; i < 256; ++i) EXPECT_EQ(d.values[i], 0.0f);
  // the block holding the NaN decodes to NaN, so the finiteness check sees it
  EXPECT_FALSE(check_finite(d.values).empty());
  EXPECT_TRUE(std::isnan(d.values[290]));
}

// Fuzzing findings (tests/fuzz/corpus/fuzz_upload_wire/crash-*): blocks at
// both ends of the float range quantise to finite values within half a step.
TEST(PoolCompress, Int8ExtremeScalesStayFiniteAndClose) {
  const float big = std::numeric_limits<float>::max();
  const float tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<float> x = {big, 1.0f, -big, 0.0f, 1000 * tiny, 0.0f, -tiny, 5 * tiny};
  const Decoded d = decode(encode(x, kOrigin, {Codec::kInt8, 4}), x.size());
  for (std::size_t b = 0; b < 2; ++b) {
    float mx = 0;
    for (std::size_t i = 4 * b; i < 4 * b + 4; ++i) mx = std::max(mx, std::fabs(x[i]));
    for (std::size_t i = 4 * b; i < 4 * b + 4; ++i) {
      ASSERT_TRUE(std::isfinite(d.values[i])) << i;
      // half a step, plus a subnormal scale's coarse rounding (a few ulps of tiny)
      EXPECT_LE(std::fabs(double(d.values[i]) - double(x[i])),
                0.5 * double(mx) / 127 * 1.001 + 4.0 * tiny)
          << i;
    }
  }
}

TEST(PoolCompress, ForgedElementCountIsRefused) {
  std::string b = encode(ramp(4), kOrigin, {Codec::kNone});
  const std::uint64_t forged = (std::uint64_t(1) << 62) + 4; // 4 * n wraps to 16
  std::memcpy(b.data() + 16, &forged, 8);
  EXPECT_THROW(decode(b, forged), InputError);
}

TEST(PoolCompress, MalformedUploadsAreRefused) {
  const auto x = ramp(500);
  const std::string b = encode(x, kOrigin, {Codec::kInt8, 256});
  EXPECT_THROW(decode(b.substr(0, b.size() / 2), x.size()), InputError); // truncated
  EXPECT_THROW(decode(b.substr(0, 10), x.size()), InputError);           // no header
  EXPECT_THROW(decode(b + "x", x.size()), InputError);                   // padded
  EXPECT_THROW(decode(b, x.size() + 1), InputError);                     // shape
  std::string flipped = b;
  flipped[kWireHeaderBytes + 7] ^= 0x40;
  EXPECT_THROW(decode(flipped, x.size()), InputError); // checksum
  std::string magic = b;
  magic[0] = 'X';
  EXPECT_THROW(decode(magic, x.size()), InputError);
  EXPECT_THROW(parse_codec("zstd"), InputError);
}

TEST(PoolCompress, HeaderCarriesTheOriginUnderTheChecksum) {
  const auto x = ramp(300);
  const std::string b = encode(x, kOrigin, {Codec::kInt8, 128});
  EXPECT_EQ(decode(b, x.size()).origin, kOrigin);
  // Rewriting the round (or the job, or the model checksum) in the header
  // breaks the checksum: an upload cannot be re-targeted at another round.
  for (std::size_t off : {24u, 32u, 40u, 48u}) {
    std::string edited = b;
    edited[off] ^= 0x01;
    EXPECT_THROW(decode(edited, x.size()), InputError) << off;
  }
  // Version 1 uploads (no origin) are refused with the reason.
  std::string v1 = b;
  v1[4] = 1;
  try {
    decode(v1, x.size());
    FAIL() << "version 1 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("wire version 1"), std::string::npos) << e.what();
  }
}

TEST(PoolOuter, PlainStepWithUnitLrAndNoMomentumSubtractsG) {
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, m(3, 0.0f);
  const std::vector<float> g = {0.25f, -0.5f, 0.125f};
  outer_step(p, m, g, {1.0f, 0.0f});
  EXPECT_EQ(p, (std::vector<float>{0.75f, -1.5f, 0.375f}));
}

TEST(PoolOuter, NesterovMatchesTheFormula) {
  const float lr = 0.7f, mu = 0.9f;
  std::vector<float> p = {1.0f, 2.0f}, m(2, 0.0f);
  const std::vector<float> g1 = {0.1f, -0.2f}, g2 = {0.3f, 0.05f};
  outer_step(p, m, g1, {lr, mu});
  outer_step(p, m, g2, {lr, mu});
  for (int i = 0; i < 2; ++i) {
    float mm = 0, pp = i == 0 ? 1.0f : 2.0f;
    for (const auto* g : {&g1, &g2}) {
      mm = mu * mm + (*g)[i];
      pp -= lr * ((*g)[i] + mu * mm);
    }
    EXPECT_FLOAT_EQ(p[i], pp);
    EXPECT_FLOAT_EQ(m[i], mm);
  }
}

TEST(PoolOuter, WeightedAverageByTokens) {
  const std::vector<float> a = {1, 2}, b = {4, 8};
  const auto avg = weighted_average({a, b}, {100.0, 300.0});
  EXPECT_FLOAT_EQ(avg[0], 0.25f * 1 + 0.75f * 4);
  EXPECT_FLOAT_EQ(avg[1], 0.25f * 2 + 0.75f * 8);
  const auto one = weighted_average({a}, {7.0});
  EXPECT_EQ(one, a); // a single contribution passes through exactly
  EXPECT_THROW(weighted_average({a}, {0.0}), std::invalid_argument);
}

TEST(PoolValidate, NormsAgainstTheRoundsMedian) {
  NormPolicy pol;
  // three uploads, one 100x too large
  auto v = judge_norms({1.0, 1.1, 100.0}, 0, pol);
  EXPECT_EQ(v[0], "");
  EXPECT_EQ(v[1], "");
  EXPECT_NE(v[2].find("exceeds"), std::string::npos);
  // two uploads: the lower median is the reference, so the inflated one fails
  v = judge_norms({1.0, 100.0}, 0, pol);
  EXPECT_EQ(v[0], "");
  EXPECT_NE(v[1], "");
  // a single upload: compared with earlier rounds, or accepted without history
  EXPECT_NE(judge_norms({100.0}, 1.0, pol)[0], "");
  EXPECT_EQ(judge_norms({5.0}, 1.0, pol)[0], "");
  EXPECT_EQ(judge_norms({100.0}, 0, pol)[0], "");
  // an absolute bound
  EXPECT_NE(judge_norms({100.0}, 0, {10.0, 50.0})[0], "");
  EXPECT_EQ(lower_median({3, 1, 2, 10}), 2);
}

TEST(PoolValidate, Finite) {
  std::vector<float> x = {1, 2, 3};
  EXPECT_EQ(check_finite(x), "");
  x[1] = INFINITY;
  EXPECT_NE(check_finite(x).find("element 1"), std::string::npos);
  EXPECT_DOUBLE_EQ(l2_norm(std::vector<float>{3, 4}), 5.0);
}

TEST(PoolJob, ParsesAndNamesBadFields) {
  nlohmann::json j = {
      {"train_data", "x_*.bin"},
      {"model",
       {{"layers", 1}, {"heads", 2}, {"channels", 32}, {"vocab", 256}, {"max_seq_len", 32}}},
      {"seq_len", 32},
      {"inner_steps", 4},
      {"compression", "none"}};
  const JobSpec s = parse_job(j);
  EXPECT_EQ(s.inner_steps, 4);
  EXPECT_EQ(s.codec.codec, Codec::kNone);
  EXPECT_EQ(s.shape.padded_vocab_size, 256);
  EXPECT_EQ(parse_job(job_to_json(s)).inner_steps, 4);
  auto bad = [&](const char* key, nlohmann::json v) {
    auto k = j;
    k[key] = v;
    try {
      parse_job(k);
      ADD_FAILURE() << key << " accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  bad("rounds", 0);
  bad("outer_momentum", 1.5);
  bad("compression", "zip");
  bad("inner_steps", "three");
  bad("min_contributors", 9);
  bad("bogus", 1);
}

// Every numeric job field is strictly typed and bounded, and the model's shape
// goes through the same check as `myelin train`'s flags (issue: a job with
// vocab 2^31-1 or a wrapping shape crashed the coordinator).
TEST(PoolJob, FieldsAreStrictlyTypedAndBounded) {
  const nlohmann::json j = {
      {"train_data", "x_*.bin"},
      {"model",
       {{"layers", 1}, {"heads", 2}, {"channels", 32}, {"vocab", 256}, {"max_seq_len", 32}}},
      {"seq_len", 32}};
  const JobSpec s = parse_job(j);
  // The stored form parses back to the same job.
  EXPECT_EQ(job_to_json(parse_job(job_to_json(s))), job_to_json(s));
  auto refused = [&](const nlohmann::json& k, const std::string& field) {
    try {
      parse_job(k);
      ADD_FAILURE() << k.dump() << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind(field + ": ", 0), 0u) << e.what();
    }
  };
  auto top = [&](const char* key, const nlohmann::json& v) {
    auto k = j;
    k[key] = v;
    refused(k, std::string("job.") + key);
  };
  auto model = [&](const char* key, const nlohmann::json& v, const std::string& field) {
    auto k = j;
    k["model"][key] = v;
    refused(k, field);
  };
  top("batch_size", 4294967297ll); // wrapped to 1 as an int before
  top("batch_size", true);
  top("batch_size", 2.5);
  top("batch_size", "4");
  top("batch_size", -1);
  top("batch_size", 2147483647); // bounded by the micro-batch check
  top("seq_len", 33);            // above model.max_seq_len
  top("grad_accum", 1.0);
  top("inner_steps", 0);
  // Parsed from text, a non-negative integer is stored unsigned: the lower
  // bound must hold there too (found by fuzzing, tests/fuzz/corpus/fuzz_pool_job).
  top("inner_steps", nlohmann::json::parse("0"));
  top("rounds", nlohmann::json::parse("0"));
  top("block_size", nlohmann::json::parse("0"));
  top("keep_snapshots", nlohmann::json::parse("1"));
  top("inner_steps", 10000000);
  top("rounds", 20000000);
  top("warmup_steps", false);
  top("inner_lr", "1e-3");
  top("inner_lr", 0);
  top("beta1", 1);
  top("loss_check", 1);
  top("keep_snapshots", 1);
  top("block_size", 1 << 21);
  top("round_deadline_s", -5);
  top("train_files", nlohmann::json::array({1, 2}));
  top("name", 7);
  model("vocab", 2147483647, "job.model.vocab");
  model("vocab", 65536.0, "job.model.vocab");
  model("layers", true, "job.model.layers");
  try { // the shape's bound, not int's
    auto k = j;
    k["model"]["layers"] = 0;
    parse_job(k);
    ADD_FAILURE() << "layers 0 accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("job.model.layers: expected 1..4096, got 0", 0), 0u)
        << e.what();
  }
  model("layers", 4294967297ll, "job.model.layers");
  model("heads", 3, "job.model.channels"); // 32 is not a multiple of 3
  model("seed", -1, "job.model.seed");
  model("bogus", 1, "job.model.bogus");
  // The shape: the parameter count wrapped to 0 before.
  auto k = j;
  k["model"] = {{"layers", 5},
                {"heads", 1},
                {"channels", 536870912},
                {"vocab", 256},
                {"padded_vocab", 2147483580},
                {"max_seq_len", 1}};
  k["seq_len"] = 1;
  refused(k, "job.model.channels");
  k["model"]["channels"] = 65536;
  refused(k, "job.model.padded_vocab");
  k["model"]["padded_vocab"] = 256;
  k["model"]["layers"] = 4096;
  refused(k, "job.model.layers/job.model.channels"); // 2^44 parameters
}

// A Llama shape in a job file, with the train command's fields and checks:
// it parses to the same ModelConfig, round-trips through the stored form,
// and the family's rules refuse what they refuse for flags.
TEST(PoolJob, LlamaShape) {
  nlohmann::json j = {{"train_data", "x_*.bin"},
                      {"model",
                       {{"layers", 2},
                        {"heads", 4},
                        {"channels", 64},
                        {"vocab", 256},
                        {"max_seq_len", 32},
                        {"family", "llama"},
                        {"kv_heads", 2},
                        {"intermediate_size", 160},
                        {"tied_head", false},
                        {"norm_eps", 1e-6},
                        {"rope_theta", 500000.0}}},
                      {"seq_len", 32}};
  const JobSpec s = parse_job(j);
  EXPECT_TRUE(s.shape.llama());
  EXPECT_EQ(s.shape.kv_heads(), 2);
  EXPECT_EQ(s.shape.hidden(), 160);
  EXPECT_FALSE(s.shape.tied_head);
  EXPECT_EQ(s.shape.norm_eps, 1e-6f);
  EXPECT_EQ(s.shape.rope.theta, 500000.0);
  const JobSpec back = parse_job(job_to_json(s));
  EXPECT_EQ(back.shape.describe(), s.shape.describe());
  EXPECT_EQ(back.shape.norm_eps, s.shape.norm_eps);
  EXPECT_EQ(back.shape.rope.theta, s.shape.rope.theta);
  EXPECT_EQ(back.shape.param_count(), s.shape.param_count());
  auto refused = [&](const char* key, const nlohmann::json& v, const std::string& field) {
    auto k = j;
    k["model"][key] = v;
    try {
      parse_job(k);
      ADD_FAILURE() << key << " = " << v.dump() << " accepted";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind(field + ": ", 0), 0u) << e.what();
    }
  };
  refused("family", "bert", "job.model.family");
  refused("kv_heads", 3, "job.model.kv_heads"); // does not divide 4 heads
  refused("norm_eps", 0, "job.model.norm_eps");
  refused("rope_theta", -1, "job.model.rope_theta");
  refused("tied_head", "no", "job.model.tied_head");
  // GPT-2 keeps the Llama fields at their defaults.
  j["model"]["family"] = "gpt2";
  j["model"].erase("norm_eps");
  j["model"].erase("rope_theta");
  j["model"].erase("tied_head");
  j["model"].erase("intermediate_size");
  refused("kv_heads", 2, "job.model.kv_heads");
}

TEST(PoolJob, PositionAfterWalksShardsAndEpochs) {
  const std::vector<std::uint64_t> b = {3, 2};
  auto p = position_after(b, 0);
  EXPECT_EQ(p.shard, 0u);
  EXPECT_EQ(p.batch, 0u);
  p = position_after(b, 4);
  EXPECT_EQ(p.shard, 1u);
  EXPECT_EQ(p.batch, 1u);
  EXPECT_EQ(p.epoch, 0u);
  p = position_after(b, 7);
  EXPECT_EQ(p.epoch, 1u);
  EXPECT_EQ(p.shard, 0u);
  EXPECT_EQ(p.batch, 2u);
}

TEST(PoolTokens, StoredHashedAndChecked) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("myelin_pool_tokens_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    Db db(db_path(dir.string()));
    create_schema(db);
    const std::string secret = create_token(db, "alice", true);
    EXPECT_EQ(secret.rfind("myl_", 0), 0u);
    auto t = find_token(db, secret);
    ASSERT_TRUE(t);
    EXPECT_EQ(t->name, "alice");
    EXPECT_TRUE(t->admin);
    EXPECT_FALSE(find_token(db, secret + "x"));
    EXPECT_FALSE(find_token(db, ""));
    auto st = db.prepare("SELECT COUNT(*) FROM tokens WHERE hash = ?");
    st.bind(1, secret);
    ASSERT_TRUE(st.step());
    EXPECT_EQ(st.i64(0), 0); // the secret itself is not stored
    EXPECT_EQ(sha256_hex("abc"),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  }
  std::filesystem::remove_all(dir);
}
