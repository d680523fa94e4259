// libFuzzer harness for model-delta downloads (runtime/pool/compress.h). The
// rounds and element count come from the input's own header (bytes 8..31); the
// old model is a fixed ramp of that many floats (none past 2^16 elements,
// which the decoder then refuses as a shape mismatch). The input goes to
// apply_model_delta. Checked: an accepted delta yields n floats whose
// checksum is the header's; encoding old -> result again and applying that
// reproduces the result bit for bit.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/pool/compress.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;
namespace pool = myelin::pool;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes = myelin::fuzz::as_string(data, size);
  std::int64_t from = 0, to = 0;
  std::uint64_t n = 0, checksum = 0;
  if (bytes.size() >= pool::kDeltaHeaderBytes) {
    std::memcpy(&from, bytes.data() + 8, 8);
    std::memcpy(&to, bytes.data() + 16, 8);
    std::memcpy(&n, bytes.data() + 24, 8);
    std::memcpy(&checksum, bytes.data() + 48, 8);
  }
  std::vector<float> old(n <= (1u << 16) ? n : 0);
  for (std::size_t i = 0; i < old.size(); ++i) old[i] = 0.25f * float(i) - 3.0f;
  std::vector<float> out;
  if (!myelin::fuzz::expect_input_error(
          [&] { out = pool::apply_model_delta(bytes, old, from, to); }))
    return 0;
  check(out.size() == old.size(), "element count");
  check(pool::params_checksum(out) == checksum, "checksum of the result");
  const std::string again = pool::encode_model_delta(old, out, from, to);
  const std::vector<float> back = pool::apply_model_delta(again, old, from, to);
  check(myelin::fuzz::same_bits(back, out), "re-encoded delta does not reproduce the result");
  return 0;
}
