// libFuzzer harness for safetensors files (runtime/io/safetensors.h) and the
// GPT-2 mapping on top of them (runtime/io/hf_gpt2.h). Feeds the input as a
// whole model.safetensors, with a fixed config.json beside it (L1 NH1 C4 V3
// maxT2). Checked: an accepted file's tensors cover its data section exactly,
// in order, each with elements x dtype size bytes; float dtypes convert, the
// others are refused as bad input; a GPT-2 model that loads has
// ParamLayout(config).total finite parameters, and saving it as F32
// safetensors and loading that again gives back bit-identical parameters.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "runtime/io/hf_gpt2.h"
#include "runtime/io/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;
using myelin::fuzz::expect_input_error;

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
  myelin::ModelFile m;
  if (!expect_input_error([&] { m = myelin::load_hf_gpt2(path); })) return 0;
  check(m.params.size() == myelin::ParamLayout(m.config).total, "parameter count");
  for (float p : m.params) check(std::isfinite(p), "a non-finite weight was accepted");
  myelin::save_hf_gpt2(path, m.config, m.params, myelin::StDtype::F32);
  const myelin::ModelFile again = myelin::load_hf_gpt2(path);
  check(again.config.describe() == m.config.describe(), "shape changed on a save/load round trip");
  check(myelin::fuzz::same_bits(again.params, m.params),
        "parameters changed on a save/load round trip");
  return 0;
}
