// libFuzzer harness for llm.c model files (runtime/io/model_file.h). Feeds the
// input as a whole model.bin to load_model_config and load_model. Checked: the
// two agree on the shape; a loaded model has exactly ParamLayout(config).total
// finite parameters; saving it again in its own version and reloading gives
// back the same shape and bit-identical parameters.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "runtime/io/model_file.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const myelin::fuzz::ScratchFile file("fuzz_model_file", "model.bin");
  const std::string& path = file.write(data, size);
  myelin::ModelConfig shape;
  const bool header_ok =
      myelin::fuzz::expect_input_error([&] { shape = myelin::load_model_config(path); });
  myelin::ModelFile m;
  if (!myelin::fuzz::expect_input_error([&] { m = myelin::load_model(path); })) return 0;
  check(header_ok, "load_model accepted a file whose header load_model_config refused");
  check(m.config.describe() == shape.describe(), "load_model and load_model_config disagree");
  check(m.params.size() == myelin::ParamLayout(m.config).total, "parameter count");
  for (float p : m.params) check(std::isfinite(p), "a non-finite weight was accepted");
  myelin::save_model(path, m.config, m.params, m.version);
  const myelin::ModelFile again = myelin::load_model(path);
  check(again.config.describe() == m.config.describe() && again.version == m.version,
        "shape or version changed on a save/load round trip");
  check(myelin::fuzz::same_bits(again.params, m.params),
        "parameters changed on a save/load round trip");
  return 0;
}
