// Hugging Face formats: safetensors files (validation of every header field,
// F32/BF16/F16 conversion, shards), config.json (GPT-2 and Llama fields), and
// GPT-2's and Llama's names mapped to the flat parameter buffer. The files are built here
// byte by byte, independently of the writer under test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "runtime/io/hf_config.h"
#include "runtime/io/model_any.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/init.h"
#include "runtime/util/bf16.h"
#include "runtime/util/error.h"
#include "runtime/util/f16.h"
#include "tests/common/input_check.h"
#include "tests/common/llama_config.h"

namespace fs = std::filesystem;
using namespace myelin;

using myelin::test_util::expect_input_error;
using myelin::test_util::expect_llama_fields;
using myelin::test_util::llama_config;
using myelin::test_util::tmpdir;

namespace {
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// A safetensors file from a header text and a data section, by hand.
std::string st_bytes(const std::string& header, const std::string& data, std::uint64_t n = ~0ull) {
  if (n == ~0ull) n = header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// One tensor of an independently built file: name, dtype, shape, raw bytes.
struct Raw {
  std::string name, dtype;
  std::vector<std::size_t> shape;
  std::string bytes;
};

std::string build_st(const std::vector<Raw>& ts) {
  std::string h = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::string data;
  for (const Raw& t : ts) {
    h += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (std::size_t i = 0; i < t.shape.size(); ++i)
      h += std::string(i ? "," : "") + std::to_string(t.shape[i]);
    h += "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
         std::to_string(data.size() + t.bytes.size()) + "]}";
    data += t.bytes;
  }
  return st_bytes(h + "}", data);
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string u16_bytes(const std::vector<std::uint16_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 2);
}

ModelConfig tiny() { return ModelConfig{16, 67, default_padded_vocab(67), 2, 2, 8}; }

std::string gpt2_json(const ModelConfig& c, const std::string& extra = "") {
  return "{\"model_type\":\"gpt2\",\"n_embd\":" + std::to_string(c.channels) +
         ",\"n_head\":" + std::to_string(c.num_heads) +
         ",\"n_layer\":" + std::to_string(c.num_layers) +
         ",\"n_positions\":" + std::to_string(c.max_seq_len) +
         ",\"vocab_size\":" + std::to_string(c.vocab_size) + extra + "}";
}

// The GPT-2 tensors of `p` (llm.c order) under Hugging Face names, in the
// given dtype, transposing the Conv1D weights and dropping wte's padding rows:
// written out here from the formats' definitions, not through the mapping.
std::vector<Raw> hf_tensors(const ModelConfig& c, const std::vector<float>& p,
                            const std::string& dtype, const std::string& prefix = "") {
  const ParamLayout lay(c);
  const std::size_t C = c.channels;
  const auto enc = [&](std::vector<float> v) {
    if (dtype == "F32") return f32_bytes(v);
    std::vector<std::uint16_t> h(v.size());
    for (std::size_t i = 0; i < v.size(); ++i)
      h[i] = dtype == "BF16" ? float_to_bf16(v[i]) : float_to_half(v[i]);
    return u16_bytes(h);
  };
  const auto slice = [&](int k, std::size_t off, std::size_t n) {
    const float* s = p.data() + lay.offsets[k] + off;
    return std::vector<float>(s, s + n);
  };
  // [out, in] in the buffer -> [in, out].
  const auto conv = [&](int k, int l, std::size_t out, std::size_t in) {
    const float* s = p.data() + lay.offsets[k] + std::size_t(l) * out * in;
    std::vector<float> v(out * in);
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < in; ++i) v[i * out + o] = s[o * in + i];
    return v;
  };
  std::vector<Raw> ts;
  const auto add = [&](const std::string& n, std::vector<std::size_t> shape, std::vector<float> v) {
    ts.push_back({prefix + n, dtype, std::move(shape), enc(std::move(v))});
  };
  add("wte.weight", {std::size_t(c.vocab_size), C}, slice(kWte, 0, c.vocab_size * C));
  add("wpe.weight", {std::size_t(c.max_seq_len), C}, slice(kWpe, 0, c.max_seq_len * C));
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    add(h + "ln_1.weight", {C}, slice(kLn1w, l * C, C));
    add(h + "ln_1.bias", {C}, slice(kLn1b, l * C, C));
    add(h + "attn.c_attn.weight", {C, 3 * C}, conv(kQkvw, l, 3 * C, C));
    add(h + "attn.c_attn.bias", {3 * C}, slice(kQkvb, l * 3 * C, 3 * C));
    add(h + "attn.c_proj.weight", {C, C}, conv(kAttprojw, l, C, C));
    add(h + "attn.c_proj.bias", {C}, slice(kAttprojb, l * C, C));
    add(h + "ln_2.weight", {C}, slice(kLn2w, l * C, C));
    add(h + "ln_2.bias", {C}, slice(kLn2b, l * C, C));
    add(h + "mlp.c_fc.weight", {C, 4 * C}, conv(kFcw, l, 4 * C, C));
    add(h + "mlp.c_fc.bias", {4 * C}, slice(kFcb, l * 4 * C, 4 * C));
    add(h + "mlp.c_proj.weight", {4 * C, C}, conv(kFcprojw, l, C, 4 * C));
    add(h + "mlp.c_proj.bias", {C}, slice(kFcprojb, l * C, C));
  }
  add("ln_f.weight", {C}, slice(kLnfw, 0, C));
  add("ln_f.bias", {C}, slice(kLnfb, 0, C));
  return ts;
}

// Random parameters with zero padding rows (they are not stored in HF files).
std::vector<float> params_of(const ModelConfig& c, std::uint64_t seed) {
  std::vector<float> p = gpt2_init(c, seed);
  const ParamLayout lay(c);
  for (std::size_t i = std::size_t(c.vocab_size) * c.channels; i < lay.sizes[kWte]; ++i) p[i] = 0;
  return p;
}

std::string gpt2_dir(const std::string& name, const ModelConfig& c, const std::vector<Raw>& ts,
                     const std::string& config = "") {
  const std::string dir = tmpdir(name);
  write_bytes(dir + "/model.safetensors", build_st(ts));
  write_bytes(dir + "/config.json", config.empty() ? gpt2_json(c) : config);
  return dir;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}
} // namespace

TEST(F16, EveryHalfRoundTripsExactly) {
  int nans = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(std::uint16_t(h));
    if (std::isnan(f)) {
      ++nans;
      EXPECT_TRUE(std::isnan(half_to_float(float_to_half(f))));
      continue;
    }
    ASSERT_EQ(float_to_half(f), h) << h;
  }
  EXPECT_EQ(nans, 2 * 1023);
  EXPECT_EQ(half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24)); // smallest subnormal
  EXPECT_EQ(half_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(half_to_float(0xc000), -2.0f);
}

TEST(F16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);     // tie, even stays
  EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02); // tie, rounds up to even
  EXPECT_EQ(float_to_half(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00); // overflows to infinity
  EXPECT_EQ(float_to_half(1e10f), 0x7c00);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000); // tie with zero: even
  EXPECT_EQ(float_to_half(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(float_to_half(std::ldexp(1023.5f, -24)), 0x0400); // carries into the normals
}

TEST(Safetensors, ReadsEveryFloatDtype) {
  const std::string dir = tmpdir("dtypes");
  const std::vector<float> v = {1.0f, -2.5f, 0.15625f, 3e-5f, 1024.0f, -0.0f};
  std::vector<std::uint16_t> bf(v.size()), hf(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    bf[i] = float_to_bf16(v[i]), hf[i] = float_to_half(v[i]);
  write_bytes(dir + "/a.safetensors", build_st({{"a", "F32", {2, 3}, f32_bytes(v)},
                                                {"b", "BF16", {6}, u16_bytes(bf)},
                                                {"c", "F16", {3, 2}, u16_bytes(hf)},
                                                {"empty", "F32", {0, 4}, ""}}));
  const SafetensorsFile f(dir + "/a.safetensors");
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  std::vector<float> out(6);
  for (const StTensor& t : f.tensors()) {
    if (t.name == "empty") {
      EXPECT_EQ(t.elements, 0u);
      continue;
    }
    f.to_float(t, out);
    for (std::size_t i = 0; i < v.size(); ++i) {
      const float want = t.name == "a"   ? v[i]
                         : t.name == "b" ? bf16_to_float(bf[i])
                                         : half_to_float(hf[i]);
      EXPECT_EQ(std::bit_cast<std::uint32_t>(out[i]), std::bit_cast<std::uint32_t>(want))
          << t.name << " " << i;
    }
  }
}

TEST(Safetensors, RefusesMalformedFiles) {
  const std::string dir = tmpdir("bad");
  const std::string p = dir + "/x.safetensors";
  const std::string d8(8, '\0');
  const auto open = [&] { SafetensorsFile f(p); };
  const auto with = [&](const std::string& bytes, const std::string& needle) {
    write_bytes(p, bytes);
    expect_input_error(open, needle);
  };
  with("abc", "x.safetensors: truncated safetensors file");
  with(st_bytes("{}", "", 1000), "header length 1000 runs past the end of the file");
  with(st_bytes("{}", "", 200ull << 20), "exceeds the limit");
  with(st_bytes("[1,2]", ""), "header: expected a JSON object");
  with(st_bytes("{\"a\":", ""), "not valid JSON");
  with(st_bytes(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", d8),
       "tensor a: unknown dtype \"Q4\"");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8),
       "tensor a: shape: expected a non-negative integer");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8),
       "tensor a: 8 bytes for 3 F32 elements (expected 12)");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", d8),
       "tensor a: data_offsets: end 16 is past the end of the file");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8),
       "tensor a: data_offsets: end 0 is before begin 8");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                d8),
       "tensor b: data_offsets overlap tensor a");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8),
       "tensor a: 4 unused bytes before it");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", d8),
       "4 bytes after the last tensor");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})",
                d8),
       "tensor a: shape: element count overflows");
  with(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", d8),
       "tensor a: unknown field x");
  with(st_bytes(R"({"a\nb":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d8),
       "x.safetensors: tensor name \"a\\nb\" holds control characters");
  // A known dtype that is not a float reads, but does not convert.
  write_bytes(p, st_bytes(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", d8));
  const SafetensorsFile f(p);
  std::vector<float> out(1);
  expect_input_error([&] { f.to_float(f.tensors()[0], out); },
                     "x.safetensors: tensor a: dtype I64 is not supported");
  expect_input_error([&] { SafetensorsFile g(dir + "/none.safetensors"); },
                     "none.safetensors: no such file");
}

TEST(Safetensors, WriterRoundTripsF32AndBf16) {
  const std::string dir = tmpdir("writer");
  const std::vector<float> v = {0.1f, -3.0f, 7.25f, 1e-3f, 2.0f, -1e4f};
  for (StDtype dt : {StDtype::F32, StDtype::BF16}) {
    write_safetensors(
        dir + "/w.safetensors",
        {{"x", {2, 3}, [&](std::span<float> d) { std::copy(v.begin(), v.end(), d.begin()); }},
         {"y", {1}, [](std::span<float> d) { d[0] = 5.0f; }}},
        dt, {{"format", "pt"}});
    const SafetensorsFile f(dir + "/w.safetensors");
    ASSERT_EQ(f.tensors().size(), 2u);
    const StTensor& x = f.tensors()[0];
    EXPECT_EQ(x.name, "x");
    EXPECT_EQ(x.shape, (std::vector<std::size_t>{2, 3}));
    EXPECT_EQ(x.dtype, dt);
    std::vector<float> out(6);
    f.to_float(x, out);
    for (std::size_t i = 0; i < v.size(); ++i)
      EXPECT_EQ(out[i], dt == StDtype::F32 ? v[i] : bf16_to_float(float_to_bf16(v[i])));
  }
}

TEST(HfGpt2, LoadsTheSameBufferAsLlmcFormat) {
  const ModelConfig c = tiny();
  const std::vector<float> p = params_of(c, 3);
  const std::string dir = gpt2_dir("same", c, hf_tensors(c, p, "F32"));
  save_model(dir + "/m.bin", c, p, 3);
  const ModelFile st = load_any_model(dir + "/model.safetensors");
  const ModelFile llmc = load_any_model(dir + "/m.bin");
  EXPECT_EQ(st.config.describe(), llmc.config.describe());
  EXPECT_TRUE(same_bits(st.params, llmc.params));
  EXPECT_TRUE(same_bits(st.params, p));
  EXPECT_EQ(load_any_model_config(dir).describe(), c.describe());
  // A folder loads the same; so do names with the "transformer." prefix, the
  // ignored attention mask buffers, and a tied lm_head.
  EXPECT_TRUE(same_bits(load_any_model(dir).params, p));
  auto ts = hf_tensors(c, p, "F32", "transformer.");
  ts.push_back({"transformer.h.0.attn.bias", "F32", {1, 1, 2, 2}, f32_bytes({1, 0, 1, 1})});
  ts.push_back({"h.1.attn.masked_bias", "F32", {}, f32_bytes({-1e4f})});
  ts.push_back({"lm_head.weight",
                "F32",
                {67, 8},
                f32_bytes(std::vector<float>(p.begin(), p.begin() + 67 * 8))});
  EXPECT_TRUE(same_bits(load_any_model(gpt2_dir("prefixed", c, ts)).params, p));
}

TEST(HfGpt2, ConvertsBf16AndF16) {
  const ModelConfig c = tiny();
  std::vector<float> p = params_of(c, 4);
  for (const char* dt : {"BF16", "F16"}) {
    const ModelFile m = load_any_model(gpt2_dir(std::string("dt") + dt, c, hf_tensors(c, p, dt)));
    std::vector<float> want = p;
    for (float& x : want)
      x = std::string(dt) == "BF16" ? bf16_to_float(float_to_bf16(x))
                                    : half_to_float(float_to_half(x));
    EXPECT_TRUE(same_bits(m.params, want)) << dt;
  }
}

TEST(HfGpt2, SaveLoadRoundTripIsExact) {
  const ModelConfig c = tiny();
  const std::vector<float> p = params_of(c, 5);
  const std::string dir = tmpdir("save");
  save_any_model(dir + "/out.safetensors", c, p, false);
  ASSERT_TRUE(fs::exists(dir + "/config.json"));
  const ModelFile m = load_any_model(dir + "/out.safetensors");
  EXPECT_EQ(m.config.describe(), c.describe());
  EXPECT_TRUE(same_bits(m.params, p));
  // The file's names and layout are the independent builder's (with the prefix).
  const SafetensorsFile f(dir + "/out.safetensors");
  const auto want = hf_tensors(c, p, "F32", "transformer.");
  ASSERT_EQ(f.tensors().size(), want.size());
  for (const Raw& r : want) {
    const auto it = std::find_if(f.tensors().begin(), f.tensors().end(),
                                 [&](const StTensor& t) { return t.name == r.name; });
    ASSERT_NE(it, f.tensors().end()) << r.name;
    const auto b = f.bytes(*it);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()), r.bytes) << r.name;
  }
  save_any_model(dir + "/bf.safetensors", c, p, true);
  std::vector<float> want16 = p;
  for (float& x : want16) x = bf16_to_float(float_to_bf16(x));
  EXPECT_TRUE(same_bits(load_any_model(dir + "/bf.safetensors").params, want16));
}

TEST(HfGpt2, RefusesMismatchedTensors) {
  const ModelConfig c = tiny();
  const std::vector<float> p = params_of(c, 6);
  const auto base = hf_tensors(c, p, "F32");
  const auto load_with = [&](const std::string& name, std::vector<Raw> ts,
                             const std::string& config = "") {
    return [=] { load_any_model(gpt2_dir(name, c, ts, config)); };
  };
  auto missing = base;
  missing.erase(missing.begin() + 5);
  expect_input_error(load_with("missing", missing), "tensor h.0.attn.c_attn.bias is missing");
  auto renamed = base;
  renamed[3].name = "h.0.ln_1.bais";
  expect_input_error(load_with("renamed", renamed), "h.0.ln_1.bias is missing");
  auto extra = base;
  extra.push_back({"h.0.mlp.gate.weight", "F32", {1}, f32_bytes({1})});
  expect_input_error(load_with("extra", extra), "tensor h.0.mlp.gate.weight: not a GPT-2 tensor");
  auto shaped = base;
  shaped[4].shape = {24, 8}; // c_attn stored [out, in]: the transpose of HF's layout
  expect_input_error(load_with("shape", shaped),
                     "tensor h.0.attn.c_attn.weight: shape [24, 8], expected [8, 24]");
  auto typed = base;
  typed[2].dtype = "I32";
  expect_input_error(load_with("dtype", typed),
                     "tensor h.0.ln_1.weight: dtype I32 is not supported");
  auto head = base;
  head.push_back({"lm_head.weight", "F32", {67, 8}, f32_bytes(std::vector<float>(67 * 8, 0.5f))});
  expect_input_error(load_with("head", head), "lm_head.weight: differs from wte.weight");
  auto nonfinite = base;
  nonfinite[2].bytes = f32_bytes(std::vector<float>(8, NAN));
  expect_input_error(load_with("nan", nonfinite), "non-finite weight nan");
  // config.json disagreeing with the tensors.
  ModelConfig wide = c;
  wide.channels = 16;
  expect_input_error(load_with("cfg", base, gpt2_json(wide)),
                     "tensor wte.weight: shape [67, 8], expected [67, 16]");
  expect_input_error(load_with("noconfig", base, "{}"), "config.json: model_type: required");
  const std::string dir = gpt2_dir("gone", c, base);
  fs::remove(dir + "/config.json");
  expect_input_error([&] { load_any_model(dir + "/model.safetensors"); },
                     "config.json: no such file");
}

TEST(HfGpt2, ShardedCheckpoints) {
  const ModelConfig c = tiny();
  const std::vector<float> p = params_of(c, 7);
  const auto ts = hf_tensors(c, p, "F32");
  const std::string dir = tmpdir("shards");
  const std::vector<Raw> a(ts.begin(), ts.begin() + 10), b(ts.begin() + 10, ts.end());
  write_bytes(dir + "/model-00001-of-00002.safetensors", build_st(a));
  write_bytes(dir + "/model-00002-of-00002.safetensors", build_st(b));
  write_bytes(dir + "/config.json", gpt2_json(c));
  const auto index = [&](const std::string& override_name, const std::string& shard) {
    std::string j = "{\"metadata\":{},\"weight_map\":{";
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const std::string s =
          ts[i].name == override_name
              ? shard
              : (i < 10 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
      j += std::string(i ? "," : "") + "\"" + ts[i].name + "\":\"" + s + "\"";
    }
    write_bytes(dir + "/model.safetensors.index.json", j + "}}");
  };
  index("", "");
  EXPECT_TRUE(same_bits(load_any_model(dir).params, p));
  EXPECT_TRUE(same_bits(load_any_model(dir + "/model.safetensors.index.json").params, p));
  index("wpe.weight", "model-00002-of-00002.safetensors");
  expect_input_error([&] { load_any_model(dir); },
                     "model-00001-of-00002.safetensors: tensor wpe.weight is here but");
  index("wpe.weight", "model-00003-of-00002.safetensors");
  expect_input_error(
      [&] { load_any_model(dir); },
      "weight_map names shard model-00003-of-00002.safetensors, which does not exist");
  index("wpe.weight", "../model-00001-of-00002.safetensors");
  expect_input_error([&] { load_any_model(dir); }, "weight_map: wpe.weight: shard '../model");
  index("wpe.weight", "sub/x.safetensors");
  expect_input_error([&] { load_any_model(dir); }, "must be a plain file name");
  write_bytes(dir + "/model.safetensors.index.json", "{\"weight_map\":[]}");
  expect_input_error([&] { load_any_model(dir); }, "weight_map: expected an object");
  const std::string empty = tmpdir("emptydir");
  expect_input_error([&] { load_any_model(empty); }, "no model.safetensors or");
}

TEST(HfConfig, Gpt2FieldsAreValidatedByName) {
  const std::string dir = tmpdir("cfg");
  const std::string p = dir + "/config.json";
  write_bytes(p, gpt2_json(tiny(), ",\"n_ctx\":16,\"activation_function\":\"gelu_new\""));
  const ModelConfig h = read_hf_config(p);
  EXPECT_EQ(h.describe(), tiny().describe());
  EXPECT_EQ(h.padded_vocab_size, 128);
  write_bytes(
      p,
      R"({"model_type":"gpt2","n_embd":8,"n_head":3,"n_layer":2,"n_positions":16,"vocab_size":67})");
  expect_input_error([&] { read_hf_config(p); },
                     "config.json: n_embd: 8 is not a multiple of heads");
  write_bytes(
      p,
      R"({"model_type":"gpt2","n_embd":8,"n_head":16,"n_layer":2,"n_positions":16,"vocab_size":67})");
  expect_input_error([&] { read_hf_config(p); }, "config.json: n_head: expected 1..8");
  write_bytes(
      p,
      R"({"model_type":"gpt2","n_embd":"8","n_head":2,"n_layer":2,"n_positions":16,"vocab_size":67})");
  expect_input_error([&] { read_hf_config(p); }, "config.json: n_embd: expected an integer");
  write_bytes(p, R"({"model_type":"gpt2","n_embd":8,"n_head":2,"n_layer":2,"vocab_size":67})");
  expect_input_error([&] { read_hf_config(p); }, "config.json: n_positions: required");
  ModelConfig longer = tiny();
  longer.max_seq_len = 2000000;
  write_bytes(p, gpt2_json(longer));
  expect_input_error([&] { read_hf_config(p); },
                     "config.json: n_positions: expected 1..1048576, got 2000000");
  write_bytes(
      p,
      R"({"model_type":"gpt2","n_embd":8,"n_head":2,"n_layer":2,"n_positions":5000000000,"vocab_size":67})");
  expect_input_error([&] { read_hf_config(p); },
                     "config.json: n_positions: expected an integer in 1..2147483647");
  write_bytes(p, gpt2_json(tiny(), ",\"activation_function\":\"relu\""));
  expect_input_error([&] { read_hf_config(p); }, "config.json: activation_function");
  write_bytes(p, gpt2_json(tiny(), ",\"n_ctx\":32"));
  expect_input_error([&] { read_hf_config(p); }, "config.json: n_ctx: 32 disagrees");
  write_bytes(p, R"({"model_type":"bert"})");
  expect_input_error([&] { read_hf_config(p); }, "config.json: model_type: expected gpt2 or llama");
  // The shape written by save reads back.
  write_hf_config(p, tiny());
  EXPECT_EQ(read_hf_config(p).describe(), tiny().describe());
}

TEST(HfConfig, LlamaFieldsFillModelConfig) {
  const std::string dir = tmpdir("llama");
  const std::string p = dir + "/config.json";
  const std::string llama32 = R"({"model_type":"llama","hidden_size":2048,"intermediate_size":8192,
    "num_attention_heads":32,"num_key_value_heads":8,"num_hidden_layers":16,"head_dim":64,
    "rms_norm_eps":1e-05,"rope_theta":500000.0,"max_position_embeddings":131072,
    "vocab_size":128256,"tie_word_embeddings":true,"hidden_act":"silu","attention_bias":false,
    "mlp_bias":false,"rope_scaling":{"factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
                    "original_max_position_embeddings":8192,"rope_type":"llama3"}})";
  write_bytes(p, llama32);
  const ModelConfig c = read_hf_config(p);
  ModelConfig preset;
  ASSERT_TRUE(model_preset("llama-1B", preset));
  EXPECT_EQ(c.describe(), preset.describe());
  expect_llama_fields(c, {.kv_heads = 8,
                          .intermediate = 8192,
                          .tied_head = true,
                          .norm_eps = 1e-5f,
                          .rope = {.theta = 500000.0,
                                   .llama3 = true,
                                   .factor = 32.0,
                                   .low_freq_factor = 1.0,
                                   .high_freq_factor = 4.0,
                                   .original_max_position = 8192.0}});
  // Written and read back: every field the same.
  write_hf_config(p, c);
  const ModelConfig again = read_hf_config(p);
  EXPECT_EQ(again.describe(), c.describe());
  EXPECT_EQ(again.norm_eps, c.norm_eps);
  EXPECT_EQ(again.rope.theta, c.rope.theta);
  EXPECT_EQ(again.rope.llama3, c.rope.llama3);
  EXPECT_EQ(again.rope.factor, c.rope.factor);
  EXPECT_EQ(again.rope.original_max_position, c.rope.original_max_position);
  EXPECT_EQ(again.tied_head, c.tied_head);
  // Defaults: kv heads = heads, untied head, eps 1e-6, theta 10000, no scaling.
  const std::string small = R"({"model_type":"llama","hidden_size":64,"intermediate_size":96,
    "num_attention_heads":4,"num_hidden_layers":2,"max_position_embeddings":32,"vocab_size":100)";
  write_bytes(p, small + "}");
  const ModelConfig d = read_hf_config(p);
  EXPECT_EQ(d.kv_heads(), 4);
  EXPECT_FALSE(d.tied_head);
  EXPECT_EQ(d.norm_eps, 1e-6f);
  EXPECT_EQ(d.rope.theta, 10000.0);
  EXPECT_FALSE(d.rope.llama3);
  EXPECT_EQ(d.padded_vocab_size, 128);
  const auto refused = [&](const std::string& extra, const std::string& needle) {
    write_bytes(p, small + extra + "}");
    expect_input_error([&] { read_hf_config(p); }, needle);
  };
  refused(R"(,"num_key_value_heads":3)", "config.json: num_key_value_heads: 3 does not divide");
  refused(R"(,"num_key_value_heads":8)", "config.json: num_key_value_heads: expected 1..4");
  refused(R"(,"attention_bias":true)", "config.json: attention_bias: expected false");
  refused(R"(,"mlp_bias":true)", "config.json: mlp_bias: expected false");
  refused(R"(,"hidden_act":"gelu")", "config.json: hidden_act: expected silu");
  refused(R"(,"head_dim":32)", "config.json: head_dim: expected hidden_size / num_attention_heads");
  refused(R"(,"rope_scaling":{"rope_type":"yarn","factor":4.0})",
          "config.json: rope_scaling.rope_type: expected llama3");
  refused(R"(,"rope_scaling":{"type":"linear","factor":4.0})",
          "config.json: rope_scaling.type: expected llama3");
  refused(R"(,"rope_scaling":{"rope_type":"llama3","factor":4.0})",
          "config.json: rope_scaling.original_max_position_embeddings: required");
  refused(R"(,"rope_scaling":{"rope_type":"llama3","factor":4.0,"low_freq_factor":4.0,)"
          R"("high_freq_factor":1.0,"original_max_position_embeddings":16})",
          "config.json: rope_scaling.high_freq_factor: expected high_freq_factor");
  refused(R"(,"rms_norm_eps":0)", "config.json: rms_norm_eps: expected a number in (0");
  refused(R"(,"rope_theta":-1)", "config.json: rope_theta: expected a number in (0");
  refused(R"(,"tie_word_embeddings":"yes")", "config.json: tie_word_embeddings: expected true");
  write_bytes(p, R"({"model_type":"llama","hidden_size":64,"intermediate_size":96,
    "num_attention_heads":4,"num_hidden_layers":2,"vocab_size":100})");
  expect_input_error([&] { read_hf_config(p); }, "config.json: max_position_embeddings: required");
  write_bytes(p, R"({"model_type":"llama","hidden_size":66,"intermediate_size":96,
    "num_attention_heads":4,"num_hidden_layers":2,"max_position_embeddings":32,"vocab_size":100})");
  expect_input_error([&] { read_hf_config(p); },
                     "config.json: hidden_size: 66 is not a multiple of heads");
}

namespace {
// A Llama-family model with GQA (NKV 1 < NH 2), an untied head and Llama 3
// rope scaling.
ModelConfig tiny_llama(bool tied = false) {
  return llama_config(
      ModelConfig{16, 67, default_padded_vocab(67), 2, 2, 8},
      {.kv_heads = 1,
       .intermediate = 12,
       .tied_head = tied,
       .rope = {.theta = 500000.0, .llama3 = true, .factor = 8.0, .original_max_position = 8}});
}

std::string llama_json(const ModelConfig& c, const std::string& extra = "") {
  return "{\"model_type\":\"llama\",\"hidden_size\":" + std::to_string(c.channels) +
         ",\"intermediate_size\":" + std::to_string(c.hidden()) +
         ",\"num_attention_heads\":" + std::to_string(c.num_heads) +
         ",\"num_key_value_heads\":" + std::to_string(c.kv_heads()) +
         ",\"num_hidden_layers\":" + std::to_string(c.num_layers) +
         ",\"max_position_embeddings\":" + std::to_string(c.max_seq_len) +
         ",\"vocab_size\":" + std::to_string(c.vocab_size) + ",\"rms_norm_eps\":1e-05" +
         ",\"rope_theta\":500000.0,\"tie_word_embeddings\":" + (c.tied_head ? "true" : "false") +
         ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0," +
         "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8}" + extra + "}";
}

// Random Llama parameters (every tensor random so a misplaced block shows),
// zero padding rows.
std::vector<float> llama_params(const ModelConfig& c, std::uint64_t seed) {
  const ParamLayout lay(c);
  std::vector<float> p(lay.total);
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (float& v : p) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v = float(int(x % 2001) - 1000) / 997.0f;
  }
  const std::size_t used = std::size_t(c.vocab_size) * c.channels;
  for (int k : {int(kWte), int(kLmHead)})
    for (std::size_t i = used; i < lay.sizes[k]; ++i) p[lay.offsets[k] + i] = 0;
  return p;
}

// The LlamaForCausalLM tensors of `p`, written out here from config.h's
// layout comment (qkvw rows q | k | v, fcw rows gate | up), not through the
// mapping under test.
std::vector<Raw> llama_tensors(const ModelConfig& c, const std::vector<float>& p,
                               const std::string& dtype) {
  const ParamLayout lay(c);
  const std::size_t C = c.channels, D = c.head_dim(), NH = c.num_heads, NKV = c.kv_heads(),
                    I = c.hidden(), V = c.vocab_size;
  const auto enc = [&](const float* s, std::size_t n) {
    std::vector<float> v(s, s + n);
    if (dtype == "F32") return f32_bytes(v);
    std::vector<std::uint16_t> h(n);
    for (std::size_t i = 0; i < n; ++i)
      h[i] = dtype == "BF16" ? float_to_bf16(v[i]) : float_to_half(v[i]);
    return u16_bytes(h);
  };
  std::vector<Raw> ts;
  const auto add = [&](const std::string& n, std::vector<std::size_t> shape, const float* s) {
    std::size_t e = 1;
    for (auto d : shape) e *= d;
    ts.push_back({n, dtype, std::move(shape), enc(s, e)});
  };
  const float* P = p.data();
  add("model.embed_tokens.weight", {V, C}, P + lay.offsets[kWte]);
  for (std::size_t l = 0; l < std::size_t(c.num_layers); ++l) {
    const std::string h = "model.layers." + std::to_string(l) + ".";
    const float* qkv = P + lay.offsets[kQkvw] + l * (NH + 2 * NKV) * D * C;
    const float* fc = P + lay.offsets[kFcw] + l * 2 * I * C;
    add(h + "input_layernorm.weight", {C}, P + lay.offsets[kLn1w] + l * C);
    add(h + "self_attn.q_proj.weight", {NH * D, C}, qkv);
    add(h + "self_attn.k_proj.weight", {NKV * D, C}, qkv + NH * D * C);
    add(h + "self_attn.v_proj.weight", {NKV * D, C}, qkv + (NH + NKV) * D * C);
    add(h + "self_attn.o_proj.weight", {C, C}, P + lay.offsets[kAttprojw] + l * C * C);
    add(h + "post_attention_layernorm.weight", {C}, P + lay.offsets[kLn2w] + l * C);
    add(h + "mlp.gate_proj.weight", {I, C}, fc);
    add(h + "mlp.up_proj.weight", {I, C}, fc + I * C);
    add(h + "mlp.down_proj.weight", {C, I}, P + lay.offsets[kFcprojw] + l * C * I);
  }
  add("model.norm.weight", {C}, P + lay.offsets[kLnfw]);
  if (!c.tied_head) add("lm_head.weight", {V, C}, P + lay.offsets[kLmHead]);
  return ts;
}

std::string llama_dir(const std::string& name, const ModelConfig& c, const std::vector<Raw>& ts,
                      const std::string& config = "") {
  const std::string dir = tmpdir(name);
  write_bytes(dir + "/model.safetensors", build_st(ts));
  write_bytes(dir + "/config.json", config.empty() ? llama_json(c) : config);
  return dir;
}

std::size_t index_of(const std::vector<Raw>& ts, const std::string& name) {
  for (std::size_t i = 0; i < ts.size(); ++i)
    if (ts[i].name == name) return i;
  ADD_FAILURE() << "no tensor " << name;
  return 0;
}
} // namespace

TEST(HfLlama, LoadsTheSameBufferAsTheModelFile) {
  for (const bool tied : {false, true}) {
    const ModelConfig c = tiny_llama(tied);
    const std::vector<float> p = llama_params(c, 3);
    const std::string dir = llama_dir(tied ? "ltied" : "luntied", c, llama_tensors(c, p, "F32"));
    const ModelFile st = load_any_model(dir + "/model.safetensors");
    EXPECT_EQ(st.config.describe(), c.describe());
    EXPECT_TRUE(st.config.rope.llama3);
    EXPECT_EQ(st.config.rope.factor, 8.0);
    EXPECT_TRUE(same_bits(st.params, p)) << tied;
    EXPECT_EQ(load_any_model_config(dir).describe(), c.describe());
    // Myelin's own model file holds the same, header included.
    save_any_model(dir + "/m.bin", st.config, st.params, false);
    const ModelFile bin = load_any_model(dir + "/m.bin");
    EXPECT_EQ(bin.config.describe(), c.describe());
    EXPECT_EQ(bin.config.rope.original_max_position, 8.0);
    EXPECT_EQ(bin.config.norm_eps, 1e-5f);
    EXPECT_TRUE(same_bits(bin.params, p));
  }
  // A tied head stored anyway, and the rotary buffers old checkpoints keep.
  const ModelConfig c = tiny_llama(true);
  const std::vector<float> p = llama_params(c, 4);
  auto ts = llama_tensors(c, p, "F32");
  ts.push_back({"lm_head.weight", "F32", {67, 8}, ts[0].bytes});
  ts.push_back({"model.layers.1.self_attn.rotary_emb.inv_freq", "F32", {2}, f32_bytes({1, 0.5f})});
  EXPECT_TRUE(same_bits(load_any_model(llama_dir("lextra", c, ts)).params, p));
}

TEST(HfLlama, ConvertsBf16AndF16) {
  const ModelConfig c = tiny_llama();
  const std::vector<float> p = llama_params(c, 5);
  for (const char* dt : {"BF16", "F16"}) {
    const ModelFile m =
        load_any_model(llama_dir(std::string("ldt") + dt, c, llama_tensors(c, p, dt)));
    std::vector<float> want = p;
    for (float& x : want)
      x = std::string(dt) == "BF16" ? bf16_to_float(float_to_bf16(x))
                                    : half_to_float(float_to_half(x));
    EXPECT_TRUE(same_bits(m.params, want)) << dt;
  }
}

TEST(HfLlama, SaveLoadRoundTripIsExact) {
  const ModelConfig c = tiny_llama();
  const std::vector<float> p = llama_params(c, 6);
  const std::string dir = tmpdir("lsave");
  save_any_model(dir + "/out.safetensors", c, p, false);
  const ModelFile m = load_any_model(dir + "/out.safetensors");
  EXPECT_EQ(m.config.describe(), c.describe());
  EXPECT_TRUE(m.config.rope.llama3);
  EXPECT_TRUE(same_bits(m.params, p));
  // The names, shapes and bytes are the independent builder's.
  const SafetensorsFile f(dir + "/out.safetensors");
  const auto want = llama_tensors(c, p, "F32");
  ASSERT_EQ(f.tensors().size(), want.size());
  for (const StTensor& t : f.tensors()) {
    const Raw& r = want[index_of(want, t.name)];
    EXPECT_EQ(t.shape, r.shape) << r.name;
    const auto b = f.bytes(t);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()), r.bytes) << r.name;
  }
  save_any_model(dir + "/bf.safetensors", c, p, true);
  std::vector<float> want16 = p;
  for (float& x : want16) x = bf16_to_float(float_to_bf16(x));
  EXPECT_TRUE(same_bits(load_any_model(dir + "/bf.safetensors").params, want16));
}

TEST(HfLlama, RefusesMismatchedTensors) {
  const ModelConfig c = tiny_llama();
  const std::vector<float> p = llama_params(c, 7);
  const auto base = llama_tensors(c, p, "F32");
  const auto load_with = [&](const std::string& name, std::vector<Raw> ts,
                             const std::string& config = "") {
    return [=] { load_any_model(llama_dir(name, c, ts, config)); };
  };
  const std::size_t k1 = index_of(base, "model.layers.1.self_attn.k_proj.weight");
  auto missing = base;
  missing.erase(missing.begin() + long(k1));
  expect_input_error(load_with("lmissing", missing),
                     "tensor model.layers.1.self_attn.k_proj.weight is missing (expected [4, 8]");
  auto renamed = base;
  renamed[index_of(base, "model.norm.weight")].name = "model.final_norm.weight";
  expect_input_error(load_with("lrenamed", renamed), "tensor model.norm.weight is missing");
  auto extra = base;
  extra.push_back(
      {"model.layers.0.self_attn.q_proj.bias", "F32", {8}, f32_bytes(std::vector<float>(8))});
  expect_input_error(
      load_with("lextra2", extra),
      "tensor model.layers.0.self_attn.q_proj.bias: not a tensor of this Llama model");
  auto shaped = base;
  shaped[k1].shape = {8, 4};
  expect_input_error(
      load_with("lshape", shaped),
      "tensor model.layers.1.self_attn.k_proj.weight: shape [8, 4], expected [4, 8]");
  auto typed = base;
  typed[1].dtype = "I32";
  expect_input_error(load_with("ldtype", typed),
                     "tensor model.layers.0.input_layernorm.weight: dtype I32 is not supported");
  auto nan = base;
  nan[1].bytes = f32_bytes(std::vector<float>(8, NAN));
  expect_input_error(load_with("lnan", nan), "non-finite weight nan");
  auto nohead = base;
  nohead.pop_back();
  expect_input_error(load_with("lnohead", nohead), "tensor lm_head.weight is missing");
  // A tied config with a head that is not the embedding.
  const ModelConfig tied = tiny_llama(true);
  expect_input_error(load_with("ltiedhead", base, llama_json(tied)),
                     "tensor lm_head.weight: differs from model.embed_tokens.weight");
  // config.json disagreeing with the tensors: kv heads, intermediate size.
  ModelConfig mha = c;
  mha.num_kv_heads = 2;
  expect_input_error(
      load_with("lkv", base, llama_json(mha)),
      "tensor model.layers.0.self_attn.k_proj.weight: shape [4, 8], expected [8, 8]");
  ModelConfig wider = c;
  wider.intermediate_size = 16;
  expect_input_error(load_with("lwide", base, llama_json(wider)),
                     "tensor model.layers.0.mlp.gate_proj.weight: shape [12, 8], expected [16, 8]");
  // GPT-2 names under a Llama config, and Llama names under a GPT-2 config.
  const ModelConfig g = tiny();
  expect_input_error(load_with("lgpt2", hf_tensors(g, params_of(g, 1), "F32")),
                     "tensor model.embed_tokens.weight is missing");
  expect_input_error(load_with("gllama", base, gpt2_json(g)), "tensor wte.weight is missing");
  // Offsets out of the file, overlapping, and a truncated file.
  const std::string dir = llama_dir("lbytes", c, base);
  const std::string file = dir + "/model.safetensors";
  std::string bytes = build_st(base);
  write_bytes(file, bytes.substr(0, bytes.size() - 4));
  expect_input_error([&] { load_any_model(dir); }, "tensor lm_head.weight: data_offsets: end");
  std::string header = bytes.substr(8, bytes.find("}}", 8) + 2 - 8);
  std::string data = bytes.substr(8 + header.size());
  const std::string emb = "\"data_offsets\":[0,2144]";
  ASSERT_NE(header.find(emb), std::string::npos);
  std::string over = header;
  const std::string ln = "\"data_offsets\":[2144,2176]";
  ASSERT_NE(over.find(ln), std::string::npos);
  over.replace(over.find(ln), ln.size(), "\"data_offsets\":[2140,2172]");
  write_bytes(file, st_bytes(over, data));
  expect_input_error([&] { load_any_model(dir); },
                     "tensor model.layers.0.input_layernorm.weight: data_offsets overlap tensor "
                     "model.embed_tokens.weight");
}

TEST(HfLlama, ShardedCheckpoint) {
  const ModelConfig c = tiny_llama();
  const std::vector<float> p = llama_params(c, 8);
  const auto ts = llama_tensors(c, p, "BF16");
  const std::string dir = tmpdir("lshards");
  const std::vector<Raw> a(ts.begin(), ts.begin() + 7), b(ts.begin() + 7, ts.end());
  write_bytes(dir + "/model-00001-of-00002.safetensors", build_st(a));
  write_bytes(dir + "/model-00002-of-00002.safetensors", build_st(b));
  write_bytes(dir + "/config.json", llama_json(c));
  std::string j = "{\"weight_map\":{";
  for (std::size_t i = 0; i < ts.size(); ++i)
    j += std::string(i ? "," : "") + "\"" + ts[i].name + "\":\"model-0000" + (i < 7 ? "1" : "2") +
         "-of-00002.safetensors\"";
  write_bytes(dir + "/model.safetensors.index.json", j + "}}");
  std::vector<float> want = p;
  for (float& x : want) x = bf16_to_float(float_to_bf16(x));
  EXPECT_TRUE(same_bits(load_any_model(dir).params, want));
}
