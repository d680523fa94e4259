// libFuzzer harness for token shards (runtime/data/shard.h). Feeds the input
// as a whole shard file to shard_token_count and read_shard (no vocabulary
// bound), then to read_shard bounded by the largest token. Checked: count and
// tokens agree; the bound max+1 accepts and the bound max refuses; writing the
// tokens again reproduces the input byte for byte.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "runtime/data/shard.h"
#include "tests/fuzz/fuzz_support.h"

using myelin::fuzz::check;
using myelin::fuzz::expect_input_error;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const myelin::fuzz::ScratchFile file("fuzz_token_shard", "shard.bin");
  const std::string& path = file.write(data, size);
  std::size_t count = 0;
  const bool count_ok = expect_input_error([&] { count = myelin::shard_token_count(path); });
  std::vector<std::uint16_t> tokens;
  if (!expect_input_error([&] { tokens = myelin::read_shard(path, 0); })) {
    check(!count_ok, "read_shard refused a shard whose header shard_token_count accepted");
    return 0;
  }
  check(count_ok && count == tokens.size(), "token count and tokens disagree");
  if (!tokens.empty()) {
    const int top = *std::max_element(tokens.begin(), tokens.end());
    check(expect_input_error([&] { myelin::read_shard(path, top + 1); }),
          "a vocabulary above every token refused the shard");
    if (top > 0)
      check(!expect_input_error([&] { myelin::read_shard(path, top); }),
            "a token at the vocabulary size was accepted");
  }
  myelin::write_shard(path, tokens);
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> again((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  // The header's unused ints are not kept: compare the first 3 and the tokens.
  check(again.size() == size && std::memcmp(again.data(), data, 12) == 0 &&
            std::memcmp(again.data() + 1024, data + 1024, size - 1024) == 0,
        "write_shard does not reproduce the tokens read");
  return 0;
}
