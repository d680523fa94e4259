// File formats: model files (llm.c's v3 fp32, v5 bf16; the Llama header), token shards, the
// training-state file and checkpoint folders; every malformed input is an
// InputError naming the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "runtime/data/shard.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/model_file.h"
#include "runtime/io/output_path.h"
#include "runtime/io/train_state.h"
#include "runtime/io/xxh64.h"
#include "runtime/model/init.h"
#include "runtime/util/error.h"
#include "tests/common/input_check.h"
#include "tests/common/llama_config.h"

namespace fs = std::filesystem;
using namespace myelin;

using myelin::test_util::expect_input_error;
using myelin::test_util::expect_llama_fields;
using myelin::test_util::llama_config;
using myelin::test_util::LlamaFields;
using myelin::test_util::tmpdir;

namespace {
ModelConfig tiny() { return ModelConfig{16, 67, 80, 2, 2, 8}; }

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

namespace {
// GQA, untied head, Llama 3 rope scaling: every header field non-default.
const LlamaFields kTinyLlama{.kv_heads = 2,
                             .intermediate = 20,
                             .tied_head = false,
                             .norm_eps = 3e-6f,
                             .rope = {.theta = 123456.5,
                                      .llama3 = true,
                                      .factor = 16.0,
                                      .low_freq_factor = 0.5,
                                      .high_freq_factor = 3.0,
                                      .original_max_position = 4}};
ModelConfig tiny_llama() { return llama_config(ModelConfig{16, 67, 80, 2, 4, 8}, kTinyLlama); }

std::vector<float> ramp(std::size_t n) {
  std::vector<float> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = float(int(i % 97) - 48) / 64.0f;
  return p;
}
} // namespace

TEST(ModelFile, LlamaHeaderRoundTripsEveryField) {
  const auto dir = tmpdir("llamafile");
  const ModelConfig c = tiny_llama();
  const auto p = ramp(ParamLayout(c).total);
  for (const int version : {3, 5}) {
    save_model(dir + "/m.bin", c, p, version);
    EXPECT_EQ(fs::file_size(dir + "/m.bin"), 1024 + p.size() * (version == 3 ? 4 : 2));
    const ModelFile m = load_model(dir + "/m.bin");
    EXPECT_EQ(m.version, version);
    const ModelConfig& r = m.config;
    EXPECT_EQ(r.describe(), c.describe());
    expect_llama_fields(r, kTinyLlama);
    EXPECT_EQ(load_model_config(dir + "/m.bin").describe(), c.describe());
    EXPECT_EQ(m.params, p); // multiples of 1/64 below 1: exact in bf16 too
  }
}

TEST(ModelFile, LlamaHeaderIsValidated) {
  const auto dir = tmpdir("llamabad");
  const auto path = dir + "/m.bin";
  const ModelConfig c = tiny_llama();
  const auto fresh = [&] { save_model(path, c, ramp(ParamLayout(c).total), 3); };
  const auto refused = [&](int index, int value, const std::string& needle) {
    fresh();
    patch_int(path, index, value);
    expect_input_error([&] { load_model(path); }, needle);
    expect_input_error([&] { load_model_config(path); }, needle);
  };
  refused(8, 3, "m.bin: bad model header: kv_heads: 3 does not divide heads");
  refused(8, 0, "m.bin: bad model header: kv_heads: expected a positive count");
  refused(9, -5, "m.bin: bad model header: intermediate_size");
  refused(9, 21, "truncated model file"); // a consistent header needs more parameters
  refused(10, 2, "m.bin: bad model header: tied_head: expected 0 or 1");
  refused(11, 7, "m.bin: bad model header: rope_scaling: expected 0 or 1");
  refused(12, 0, "m.bin: bad model header: norm_eps");
  refused(14, -1, "m.bin: bad model header: rope_theta"); // a negative or NaN double
  refused(20, 0, "m.bin: bad model header: rope_scaling.high_freq_factor");
  refused(100, 1, "m.bin: bad model header: reserved word 100 is 1, expected 0");
  refused(6, 12, "m.bin: bad model header: heads: the head size channels / heads = 3 must be even");
  // A GPT-2 file's magic on a Llama file reads the GPT-2 header: its size disagrees.
  refused(0, kModelMagic, "unexpected trailing bytes");
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

TEST(TrainState, FieldsAreBoundedEvenWithAValidChecksum) {
  const auto dir = tmpdir("statebound");
  const auto path = dir + "/st.bin";
  TrainState s;
  s.rng = 7;
  s.param_count = 4;
  s.m = {1, 2, 3, 4};
  s.v = {1, 2, 3, 4};
  // Each file below is written by save_train_state, so its checksum is right.
  s.step = std::uint64_t(1) << 63;
  save_train_state(path, s);
  expect_input_error([&] { load_train_state(path); }, "st.bin: step 9223372036854775808 out of");
  s.step = std::uint64_t(1) << 31;
  save_train_state(path, s);
  expect_input_error([&] { load_train_state(path); }, "step 2147483648 out of range");
  s.step = kMaxTrainStep;
  save_train_state(path, s);
  EXPECT_EQ(load_train_state(path).step, kMaxTrainStep);
  s.rank = 2;
  save_train_state(path, s);
  expect_input_error([&] { load_train_state(path); }, "rank 2 of 1 out of range");
  s.rank = 0;
  s.dp = 2;
  save_train_state(path, s);
  expect_input_error([&] { load_train_state(path); }, "dp x pp = 2x1 is not 1 ranks");
  s.dp = 1;
  s.zero = 5;
  save_train_state(path, s);
  expect_input_error([&] { load_train_state(path); }, "zero 5");
  s.zero = 0;
  s.slice_begin = 1;
  save_train_state(path, s);
  expect_input_error([&] { load_train_state(path); }, "exceeds the 4 parameters");
  s.slice_begin = 0;
  s.rng = 0;
  save_train_state(path, s);
  expect_input_error([&] { load_train_state(path); }, "RNG state is 0");
}

TEST(Xxh64, KnownValuesAndStreaming) {
  EXPECT_EQ(xxh64_hex(xxh64("", 0)), "ef46db3751d8e999");
  EXPECT_EQ(xxh64_hex(xxh64("a", 1)), "d24ec4f1a98c6e5b");
  EXPECT_EQ(xxh64_hex(xxh64("abc", 3)), "44bc2cf5ad770999");
  std::array<unsigned char, 100> b{};
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(xxh64_hex(xxh64(b.data(), b.size())), "6ac1e58032166597");
  // Any split into add() calls gives the same digest.
  for (std::size_t step : {1, 3, 7, 31, 32, 33}) {
    Xxh64 x;
    for (std::size_t i = 0; i < b.size(); i += step)
      x.add(b.data() + i, std::min(step, b.size() - i));
    EXPECT_EQ(x.digest(), xxh64(b.data(), b.size())) << step;
  }
}

TEST(ModelFile, NonFiniteWeightsNameFileAndTensor) {
  const auto dir = tmpdir("modelnan");
  const auto cfg = tiny();
  const ParamLayout lay(cfg);
  auto p = gpt2_init(cfg, 3);
  // Element 5 of layer 1's fcw.
  p[lay.offsets[kFcw] + lay.per_layer(kFcw, cfg.num_layers) + 5] = NAN;
  save_model(dir + "/m.bin", cfg, p, 3);
  expect_input_error([&] { load_model(dir + "/m.bin"); },
                     "m.bin: non-finite weight nan in tensor fcw of layer 1 (element 5)");
  p = gpt2_init(cfg, 3);
  p[2] = INFINITY;
  save_model(dir + "/m.bin", cfg, p, 5);
  expect_input_error([&] { load_model(dir + "/m.bin"); }, "inf in tensor wte (element 2)");
}

namespace {
// A complete one-rank checkpoint of step `step` in dir, as the trainer writes it.
std::string write_checkpoint(const std::string& dir, std::uint64_t step, int ranks = 1) {
  const auto cfg = tiny();
  const auto p = checkpoint_paths(dir, step);
  begin_checkpoint(p);
  save_model(p.model(), cfg, gpt2_init(cfg, 1), 3);
  const std::size_t n = ParamLayout(cfg).total;
  for (int r = 0; r < ranks; ++r) {
    TrainState s;
    s.step = step;
    s.rng = 99;
    s.rank = std::uint32_t(r);
    s.ranks = std::uint32_t(ranks);
    s.dp = std::uint32_t(ranks);
    s.zero = ranks > 1 ? 1 : 0;
    s.param_count = n;
    s.slice_begin = n / ranks * r;
    s.m.assign(r + 1 < ranks ? n / ranks : n - s.slice_begin, 0.5f);
    s.v.assign(s.m.size(), 0.25f);
    save_train_state(p.state(r), s);
  }
  finish_checkpoint(dir, p, {step, ranks, ranks, 1, ranks > 1 ? 1 : 0, cfg.describe()}, 0);
  return p.final_dir;
}

// Rewrites a manifest line (key=value), or drops it when value is empty.
void set_manifest(const std::string& ck, const std::string& key, const std::string& value) {
  auto m = read_manifest(ck);
  if (value.empty())
    m.erase(key);
  else
    m[key] = value;
  std::ofstream out(ck + "/manifest.txt", std::ios::trunc);
  for (const auto& [k, v] : m) out << k << "=" << v << "\n";
}

// Records the current checksum of a file in the manifest, as a forger would.
void rehash(const std::string& ck, const std::string& file) {
  set_manifest(ck, "file." + file,
               xxh64_hex(xxh64_file(ck + "/" + file)) + " " +
                   std::to_string(fs::file_size(ck + "/" + file)));
}

// Everything resume does to a checkpoint folder.
void resume_checks(const std::string& ck) {
  const auto info = read_checkpoint(ck);
  verify_checkpoint_files(info);
  const auto mf = load_checkpoint_model(info);
  for (int r = 0; r < info.layout.ranks; ++r) load_checkpoint_state(info, r, mf.config);
}
} // namespace

TEST(Checkpoint, RoundTripWithChecksums) {
  const auto dir = tmpdir("ckok");
  const auto ck = write_checkpoint(dir, 12, 2);
  const auto m = read_manifest(ck);
  EXPECT_EQ(m.at("format"), "2");
  EXPECT_EQ(m.at("file.model.bin").substr(0, 16), xxh64_hex(xxh64_file(ck + "/model.bin")));
  EXPECT_EQ(m.count("file.state_1.bin"), 1u);
  const auto info = read_checkpoint(ck);
  EXPECT_EQ(info.layout.step, 12u);
  EXPECT_EQ(info.layout.ranks, 2);
  EXPECT_EQ(info.files.size(), 3u);
  resume_checks(ck);
  EXPECT_EQ(load_checkpoint_state(info, 1, tiny()).slice_begin, ParamLayout(tiny()).total / 2);
}

TEST(Checkpoint, DamagedFilesAreRefusedNamingFolderAndFile) {
  const auto dir = tmpdir("ckbad");
  std::string ck;
  auto fresh = [&] {
    fs::remove_all(dir);
    ck = write_checkpoint(dir, 10);
  };
  fresh(); // one flipped bit in the model
  {
    std::fstream f(ck + "/model.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(2000);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(2000);
    f.write(&c, 1);
  }
  expect_input_error([&] { resume_checks(ck); }, "step_00000010/model.bin: checksum mismatch");
  fresh(); // an all-zero model of the right size
  {
    const auto n = fs::file_size(ck + "/model.bin");
    std::ofstream(ck + "/model.bin", std::ios::binary | std::ios::trunc)
        << std::string(std::size_t(n), '\0');
  }
  expect_input_error([&] { resume_checks(ck); }, "model.bin: checksum mismatch");
  fresh(); // a truncated state
  fs::resize_file(ck + "/state_0.bin", 100);
  expect_input_error([&] { resume_checks(ck); }, "state_0.bin: 100 bytes but the manifest says");
  fresh(); // the state of another step, its checksum recorded in the manifest
  {
    auto s = load_train_state(ck + "/state_0.bin");
    s.step = 11;
    save_train_state(ck + "/state_0.bin", s);
    rehash(ck, "state_0.bin");
  }
  expect_input_error([&] { resume_checks(ck); },
                     "state_0.bin: step 11 but the manifest says step=10");
  fresh(); // an absurd step with all checksums recomputed
  {
    auto s = load_train_state(ck + "/state_0.bin");
    s.step = std::uint64_t(1) << 63;
    save_train_state(ck + "/state_0.bin", s);
    rehash(ck, "state_0.bin");
  }
  expect_input_error([&] { resume_checks(ck); },
                     "state_0.bin: step 9223372036854775808 out of range");
  fresh(); // NaN and negative moments with all checksums recomputed
  {
    auto s = load_train_state(ck + "/state_0.bin");
    const ParamLayout lay(tiny());
    s.m[lay.offsets[kWpe] + 3] = NAN;
    save_train_state(ck + "/state_0.bin", s);
    rehash(ck, "state_0.bin");
    expect_input_error([&] { resume_checks(ck); },
                       "state_0.bin: non-finite first moment nan in tensor wpe (element 3)");
    s.m[lay.offsets[kWpe] + 3] = 0;
    s.v[lay.offsets[kLnfb]] = -1;
    save_train_state(ck + "/state_0.bin", s);
    rehash(ck, "state_0.bin");
    expect_input_error([&] { resume_checks(ck); },
                       "negative second moment -1 in tensor lnfb (element 0)");
  }
  fresh(); // a state written by another layout
  {
    auto s = load_train_state(ck + "/state_0.bin");
    s.ranks = 2;
    s.dp = 2;
    save_train_state(ck + "/state_0.bin", s);
    rehash(ck, "state_0.bin");
  }
  expect_input_error([&] { resume_checks(ck); }, "written by rank 0 of 2");
  fresh(); // a model of another shape than the manifest says
  set_manifest(ck, "model", "L=3 NH=2 C=8 V=67 Vp=80 maxT=16");
  expect_input_error([&] { resume_checks(ck); }, "model.bin: shape L=2");
}

TEST(Checkpoint, ManifestFolderAndFileListMustAgree) {
  const auto dir = tmpdir("ckagree");
  std::string ck;
  auto fresh = [&] {
    fs::remove_all(dir);
    ck = write_checkpoint(dir, 10);
  };
  fresh();
  set_manifest(ck, "step", "20");
  expect_input_error([&] { read_checkpoint(ck); }, "step=20 but the folder is step_00000010");
  fresh();
  fs::rename(ck, dir + "/step_00000030");
  expect_input_error([&] { read_checkpoint(dir + "/step_00000030"); },
                     "step=10 but the folder is step_00000030");
  fresh();
  set_manifest(ck, "ranks", "2");
  expect_input_error([&] { read_checkpoint(ck); }, "dp x pp = 1x1 but ranks=2");
  fresh();
  set_manifest(ck, "ranks", "2");
  set_manifest(ck, "dp", "2");
  expect_input_error([&] { read_checkpoint(ck); }, "no checksum line for state_1.bin");
  fresh();
  set_manifest(ck, "step", "99999999999999999999");
  expect_input_error([&] { read_checkpoint(ck); }, "step=99999999999999999999 is not a number");
  fresh();
  std::ofstream(ck + "/state_1.bin") << "stray";
  expect_input_error([&] { read_checkpoint(ck); }, "state_1.bin: unexpected file");
  fresh();
  fs::remove(ck + "/state_0.bin");
  expect_input_error([&] { read_checkpoint(ck); }, "state_0.bin: missing");
  fresh();
  set_manifest(ck, "file.model.bin", "xyz 12");
  expect_input_error([&] { read_checkpoint(ck); }, "file.model.bin=xyz 12 is not");
  fresh();
  set_manifest(ck, "format", "");
  expect_input_error([&] { read_checkpoint(ck); }, "no format line");
  fresh();
  fs::remove(ck + "/manifest.txt");
  expect_input_error([&] { read_checkpoint(ck); }, "no manifest.txt");
  expect_input_error([&] { read_checkpoint(dir + "/nothere"); }, "no such checkpoint folder");
  fs::create_directories(dir + "/other");
  expect_input_error([&] { read_checkpoint(dir + "/other"); }, "not a checkpoint folder name");
}

TEST(Checkpoint, NewestFolderIsChosenAndOddNamesNeverCrash) {
  const auto dir = tmpdir("ckpt");
  EXPECT_FALSE(latest_checkpoint(dir).has_value());
  EXPECT_FALSE(latest_checkpoint(dir + "/nothere").has_value());
  write_checkpoint(dir, 10);
  // A checkpoint of step 20 whose writer died before the manifest/rename.
  auto p2 = checkpoint_paths(dir, 20);
  begin_checkpoint(p2);
  std::ofstream(p2.model()) << "partial";
  fs::create_directories(dir + "/step_abc");
  std::ofstream(dir + "/step_40") << "a file, not a folder";
  ASSERT_TRUE(latest_checkpoint(dir).has_value());
  EXPECT_EQ(fs::path(*latest_checkpoint(dir)).filename(), "step_00000010");
  // keep = 2 drops the oldest complete ones.
  for (int s : {30, 40, 50}) {
    auto p = checkpoint_paths(dir, s);
    begin_checkpoint(p);
    save_model(p.model(), tiny(), gpt2_init(tiny(), 1), 3);
    std::ofstream(p.state(0)) << "state";
    finish_checkpoint(dir, p, {std::uint64_t(s), 1, 1, 1, 0, tiny().describe()}, 2);
  }
  EXPECT_FALSE(fs::exists(dir + "/step_00000010"));
  EXPECT_FALSE(fs::exists(dir + "/step_00000030"));
  EXPECT_TRUE(fs::exists(dir + "/step_00000040"));
  EXPECT_EQ(fs::path(*latest_checkpoint(dir)).filename(), "step_00000050");
  // A step number beyond what a run can reach (here beyond 64 bits): refused
  // by name when resuming, left alone (not deleted, no crash) when pruning.
  const std::string huge = dir + "/step_99999999999999999999";
  fs::create_directories(huge);
  std::ofstream(huge + "/manifest.txt") << "step=1\n";
  expect_input_error([&] { latest_checkpoint(dir); },
                     "step_99999999999999999999: step number out of range");
  auto p = checkpoint_paths(dir, 60);
  begin_checkpoint(p);
  save_model(p.model(), tiny(), gpt2_init(tiny(), 1), 3);
  std::ofstream(p.state(0)) << "state";
  finish_checkpoint(dir, p, {60, 1, 1, 1, 0, tiny().describe()}, 1);
  EXPECT_TRUE(fs::exists(huge));
  EXPECT_FALSE(fs::exists(dir + "/step_00000050"));
  EXPECT_TRUE(fs::exists(dir + "/step_00000060/manifest.txt"));
  // --checkpoint-dir naming a regular file.
  expect_input_error([&] { check_output_dir(dir + "/step_40", "--checkpoint-dir"); },
                     "--checkpoint-dir");
  check_output_dir(dir, "--checkpoint-dir");
  check_output_dir(dir + "/not_yet", "--checkpoint-dir");
}
