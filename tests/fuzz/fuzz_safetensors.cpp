// libFuzzer harness for safetensors files (runtime/io/safetensors.h) and the
// GPT-2 and Llama mappings on top of them (runtime/io/hf_gpt2.h, hf_llama.h,
// through model_any.h). Feeds the input as a whole model.safetensors, once
// beside a fixed GPT-2 config.json (L1 NH1 C4 V3 maxT2) and once beside a fixed
// Llama one (L1 NH2 NKV1 C4 I4 V3 maxT2, untied head). Checked: an accepted
// file's tensors cover its data section exactly, in order, each with elements
// x dtype size bytes; float dtypes convert, the others are refused as bad
// input; a model that loads has ParamLayout(config).total finite parameters,
// and saving it as F32 safetensors and loading that again gives back
// bit-identical parameters.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "runtime/io/model_any.h"
#include "runtime/io/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;
using myelin::fuzz::expect_input_error;

namespace {
// Loads `path` through model_any (config.json beside it picks the family);
// an accepted model round-trips through F32 safetensors bit for bit.
void check_model(const std::string& path) {
  myelin::ModelFile m;
  if (!expect_input_error([&] { m = myelin::load_any_model(path); })) return;
  check(m.params.size() == myelin::ParamLayout(m.config).total, "parameter count");
  for (float p : m.params) check(std::isfinite(p), "a non-finite weight was accepted");
  myelin::save_any_model(path, m.config, m.params, false);
  const myelin::ModelFile again = myelin::load_any_model(path);
  check(again.config.describe() == m.config.describe(), "shape changed on a save/load round trip");
  check(myelin::fuzz::same_bits(again.params, m.params),
        "parameters changed on a save/load round trip");
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const myelin::fuzz::ScratchFile file("fuzz_safetensors", "model.safetensors");
  static const std::string dir = std::filesystem::path(file.path()).parent_path().string();
  static const bool config_written = [] {
    std::ofstream(dir + "/config.json") << R"({"model_type":"gpt2","n_embd":4,"n_head":1,)"
                                           R"("n_layer":1,"n_positions":2,"vocab_size":3})";
    return true;
  }();
  (void)config_written;
  const std::string& path = file.write(data, size);
  std::unique_ptr<myelin::SafetensorsFile> f;
  if (!expect_input_error([&] { f = std::make_unique<myelin::SafetensorsFile>(path); })) return 0;
  std::size_t at = 0;
  std::vector<float> buf;
  for (const myelin::StTensor& t : f->tensors()) {
    check(t.begin == at && t.end >= t.begin, "tensors do not cover the data section in order");
    check(t.end - t.begin == t.elements * myelin::dtype_size(t.dtype), "tensor byte count");
    check(f->bytes(t).size() == t.end - t.begin, "tensor bytes");
    at = t.end;
    if (t.elements > (std::size_t(1) << 24)) continue;
    buf.resize(t.elements);
    const bool is_float = t.dtype == myelin::StDtype::F32 || t.dtype == myelin::StDtype::BF16 ||
                          t.dtype == myelin::StDtype::F16;
    check(expect_input_error([&] { f->to_float(t, buf); }) == is_float,
          "to_float accepted a non-float dtype or refused a float one");
  }
  check(8 + at <= size, "tensors past the end of the input");
  f.reset();
  static const myelin::fuzz::ScratchFile llama("fuzz_safetensors_llama", "model.safetensors");
  static const bool llama_config_written = [] {
    const std::string d = std::filesystem::path(llama.path()).parent_path().string();
    std::ofstream(d + "/config.json")
        << R"({"model_type":"llama","hidden_size":4,"intermediate_size":4,)"
           R"("num_attention_heads":2,"num_key_value_heads":1,"num_hidden_layers":1,)"
           R"("max_position_embeddings":2,"vocab_size":3,"tie_word_embeddings":false})";
    return true;
  }();
  (void)llama_config_written;
  check_model(llama.write(data, size));
  check_model(file.write(data, size));
  return 0;
}
