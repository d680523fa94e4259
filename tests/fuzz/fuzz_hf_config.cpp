// libFuzzer harness for Hugging Face config.json (runtime/io/hf_config.h).
// Feeds the input as a whole config.json. Checked: an accepted config (GPT-2 or
// Llama) passes ModelConfig::validate, and write_hf_config then read_hf_config
// gives back the same ModelConfig (shape, family, kv heads, intermediate size,
// tied head, norm eps, rope parameters).
#include <cstddef>
#include <cstdint>

#include "runtime/io/hf_config.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;
using myelin::fuzz::expect_input_error;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const myelin::fuzz::ScratchFile file("fuzz_hf_config", "config.json");
  const std::string& path = file.write(data, size);
  myelin::ModelConfig c;
  if (!expect_input_error([&] { c = myelin::read_hf_config(path); })) return 0;
  check(expect_input_error([&] { c.validate(); }), "an invalid shape was accepted");
  myelin::write_hf_config(path, c);
  const myelin::ModelConfig again = myelin::read_hf_config(path);
  check(again.describe() == c.describe() && again.family == c.family &&
            again.tied_head == c.tied_head && again.norm_eps == c.norm_eps &&
            again.rope.theta == c.rope.theta && again.rope.llama3 == c.rope.llama3 &&
            (!c.rope.llama3 || (again.rope.factor == c.rope.factor &&
                                again.rope.low_freq_factor == c.rope.low_freq_factor &&
                                again.rope.high_freq_factor == c.rope.high_freq_factor &&
                                again.rope.original_max_position == c.rope.original_max_position)),
        "config changed on a write/read round trip");
  return 0;
}
