// File formats: llm.c model files (v3 fp32, v5 bf16), token shards, the
// training-state file and checkpoint folders; every malformed input is an
// InputError naming the file.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "runtime/data/shard.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/model_file.h"
#include "runtime/io/train_state.h"
#include "runtime/model/init.h"
#include "runtime/util/error.h"

namespace fs = std::filesystem;
using namespace myelin;

namespace {
GPT2Config tiny() { return GPT2Config{16, 67, 80, 2, 2, 8}; }

std::string tmpdir(const std::string& name) {
  auto p = fs::temp_directory_path() / ("myelin_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

void expect_input_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL() << "expected InputError containing '" << needle << "'";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void patch_int(const std::string& path, int index, int value) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(index * 4);
  f.write(reinterpret_cast<const char*>(&value), 4);
}
} // namespace

TEST(ModelFile, Fp32RoundTripIsExact) {
  const auto dir = tmpdir("model");
  const auto cfg = tiny();
  const auto p = gpt2_init(cfg, 7);
  save_model(dir + "/m.bin", cfg, p, 3);
  const auto m = load_model(dir + "/m.bin");
  EXPECT_EQ(m.version, 3);
  EXPECT_EQ(m.config.padded_vocab_size, 80);
  EXPECT_EQ(m.config.vocab_size, 67);
  ASSERT_EQ(m.params.size(), p.size());
  EXPECT_EQ(m.params, p);
  EXPECT_EQ(fs::file_size(dir + "/m.bin"), 1024 + p.size() * 4);
}

TEST(ModelFile, Bf16RoundTripWithinBf16Precision) {
  const auto dir = tmpdir("model16");
  const auto cfg = tiny();
  const auto p = gpt2_init(cfg, 8);
  save_model(dir + "/m.bin", cfg, p, 5);
  const auto m = load_model(dir + "/m.bin");
  EXPECT_EQ(m.version, 5);
  EXPECT_EQ(fs::file_size(dir + "/m.bin"), 1024 + p.size() * 2);
  for (std::size_t i = 0; i < p.size(); ++i)
    EXPECT_LE(std::fabs(m.params[i] - p[i]), std::fabs(p[i]) * (1.0f / 256) + 1e-30f) << i;
}

TEST(ModelFile, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to even -> 1.0
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3f82); // 1 + 3*2^-8 -> rounds up to even
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

TEST(ModelFile, BadInputsNameTheFile) {
  const auto dir = tmpdir("modelbad");
  const auto cfg = tiny();
  const auto path = dir + "/m.bin";
  expect_input_error([&] { load_model(dir + "/missing.bin"); }, "missing.bin: no such file");
  save_model(path, cfg, gpt2_init(cfg, 1), 3);
  patch_int(path, 0, 12345);
  expect_input_error([&] { load_model(path); }, "magic 12345");
  patch_int(path, 0, kModelMagic);
  patch_int(path, 1, 4);
  expect_input_error([&] { load_model(path); }, "unsupported model version 4");
  patch_int(path, 1, 3);
  fs::resize_file(path, fs::file_size(path) - 4);
  expect_input_error([&] { load_model(path); }, "truncated");
  fs::resize_file(path, fs::file_size(path) + 8);
  expect_input_error([&] { load_model(path); }, "trailing bytes");
  fs::resize_file(path, 100);
  expect_input_error([&] { load_model(path); }, "header");
}

// The header in a 1024-byte file: maxT 1, V 256, L 5, NH 1, C 2^29,
// Vp 2147483580 wrapped the parameter count to 0, so the size check passed.
TEST(ModelFile, WrappingShapeInTheHeaderIsRefused) {
  const auto dir = tmpdir("modelhuge");
  const auto path = dir + "/huge.bin";
  std::array<int, 256> h{};
  const int fields[] = {kModelMagic, 3, 1, 256, 5, 1, 536870912, 2147483580};
  std::copy(std::begin(fields), std::end(fields), h.begin());
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(h.data()), 1024);
  expect_input_error([&] { load_model(path); }, "huge.bin: bad model header: channels");
  expect_input_error([&] { load_model_config(path); }, "huge.bin: bad model header: channels");
  h[6] = 64; // in range; the padded vocabulary is not
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(h.data()), 1024);
  expect_input_error([&] { load_model_config(path); }, "bad model header: padded_vocab");
}

TEST(Shard, RoundTripAndValidation) {
  const auto dir = tmpdir("shard");
  std::vector<std::uint16_t> t = {1, 2, 3, 66, 0, 5};
  write_shard(dir + "/s.bin", t);
  EXPECT_EQ(read_shard(dir + "/s.bin", 67), t);
  EXPECT_EQ(shard_token_count(dir + "/s.bin"), 6u);
  expect_input_error([&] { read_shard(dir + "/s.bin", 66); }, "token 66 at position 3");
  fs::resize_file(dir + "/s.bin", 1024 + 5);
  expect_input_error([&] { read_shard(dir + "/s.bin", 67); }, "truncated");
  write_shard(dir + "/s.bin", t);
  patch_int(dir + "/s.bin", 0, 20240326);
  expect_input_error([&] { read_shard(dir + "/s.bin", 67); }, "not a token shard");
  patch_int(dir + "/s.bin", 0, kShardMagic);
  patch_int(dir + "/s.bin", 1, 2);
  expect_input_error([&] { read_shard(dir + "/s.bin", 67); }, "version 2");
}

TEST(TrainState, RoundTripAndChecksum) {
  const auto dir = tmpdir("state");
  TrainState s;
  s.step = 42;
  s.data = {1, 2, 3};
  s.rng = 0xdeadbeefcafeull;
  s.param_count = 5;
  s.slice_begin = 0;
  s.m = {1, 2, 3, 4, 5};
  s.v = {0.5f, 0.25f, 0.125f, 2, 3};
  save_train_state(dir + "/st.bin", s);
  const auto r = load_train_state(dir + "/st.bin");
  EXPECT_EQ(r.step, 42u);
  EXPECT_EQ(r.data.epoch, 1u);
  EXPECT_EQ(r.data.shard, 2u);
  EXPECT_EQ(r.data.batch, 3u);
  EXPECT_EQ(r.rng, s.rng);
  EXPECT_EQ(r.m, s.m);
  EXPECT_EQ(r.v, s.v);
  // Flip one byte of the payload: the checksum catches it.
  {
    std::fstream f(dir + "/st.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char c = 0x7f;
    f.write(&c, 1);
  }
  expect_input_error([&] { load_train_state(dir + "/st.bin"); }, "checksum");
  fs::resize_file(dir + "/st.bin", 50);
  expect_input_error([&] { load_train_state(dir + "/st.bin"); }, "truncated");
}

TEST(Checkpoint, OnlyCompleteFoldersCountAsLatest) {
  const auto dir = tmpdir("ckpt");
  EXPECT_FALSE(latest_checkpoint(dir).has_value());
  auto p1 = checkpoint_paths(dir, 10);
  begin_checkpoint(p1);
  finish_checkpoint(dir, p1, {{"step", "10"}}, 0);
  // A checkpoint of step 20 whose writer died before the manifest/rename.
  auto p2 = checkpoint_paths(dir, 20);
  begin_checkpoint(p2);
  std::ofstream(p2.model()) << "partial";
  ASSERT_TRUE(latest_checkpoint(dir).has_value());
  EXPECT_EQ(fs::path(*latest_checkpoint(dir)).filename(), "step_00000010");
  EXPECT_EQ(read_manifest(*latest_checkpoint(dir)).at("step"), "10");
  // keep = 2 drops the oldest complete ones.
  for (int s : {30, 40, 50}) {
    auto p = checkpoint_paths(dir, s);
    begin_checkpoint(p);
    finish_checkpoint(dir, p, {{"step", std::to_string(s)}}, 2);
  }
  EXPECT_FALSE(fs::exists(dir + "/step_00000010"));
  EXPECT_FALSE(fs::exists(dir + "/step_00000030"));
  EXPECT_TRUE(fs::exists(dir + "/step_00000040"));
  EXPECT_EQ(fs::path(*latest_checkpoint(dir)).filename(), "step_00000050");
}
