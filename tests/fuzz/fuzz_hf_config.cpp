// libFuzzer harness for Hugging Face config.json (runtime/io/hf_config.h).
// Feeds the input as a whole config.json. Checked: an accepted GPT-2 config
// passes ModelConfig::validate, and write_gpt2_config then read_hf_config gives
// back the same shape; an accepted Llama config has positive sizes, heads
// dividing hidden_size, and key/value heads dividing the heads.
#include <cstddef>
#include <cstdint>

#include "runtime/io/hf_config.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;
using myelin::fuzz::expect_input_error;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const myelin::fuzz::ScratchFile file("fuzz_hf_config", "config.json");
  const std::string& path = file.write(data, size);
  myelin::HfConfig c;
  if (!expect_input_error([&] { c = myelin::read_hf_config(path); })) return 0;
  check(c.gpt2.has_value() != c.llama.has_value(), "exactly one family is filled");
  if (c.gpt2) {
    check(expect_input_error([&] { c.gpt2->validate(); }), "an invalid GPT-2 shape was accepted");
    myelin::write_gpt2_config(path, *c.gpt2);
    const myelin::HfConfig again = myelin::read_hf_config(path);
    check(again.gpt2 && again.gpt2->describe() == c.gpt2->describe(),
          "shape changed on a write/read round trip");
  } else {
    const myelin::LlamaConfig& l = *c.llama;
    check(l.hidden_size > 0 && l.intermediate_size > 0 && l.num_hidden_layers > 0 &&
              l.vocab_size > 0 && l.num_attention_heads > 0 && l.num_key_value_heads > 0,
          "a non-positive Llama size was accepted");
    check(l.hidden_size % l.num_attention_heads == 0 &&
              l.num_attention_heads % l.num_key_value_heads == 0,
          "Llama heads that do not divide were accepted");
    check(expect_input_error([&] { myelin::require_gpt2(c, path); }) == false,
          "a Llama config passed as GPT-2");
  }
  return 0;
}
