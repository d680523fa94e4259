// libFuzzer harness for token shards (runtime/data/shard.h), uint16 (version
// 1) and uint32 (version 7). Feeds the input as a whole shard file to
// shard_token_count and read_token_shard (no vocabulary bound), then to
// read_token_shard bounded by the largest token. Checked: count and
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
  myelin::TokenShard tokens;
  if (!expect_input_error([&] { tokens = myelin::read_token_shard(path, 0); })) {
    check(!count_ok, "read_token_shard refused a shard whose header shard_token_count accepted");
    return 0;
  }
  check(count_ok && count == tokens.size(), "token count and tokens disagree");
  std::uint32_t top = 0;
  for (std::size_t i = 0; i < tokens.size(); ++i) top = std::max(top, tokens[i]);
  // Vocabulary bounds are ints: tokens of 2^31 and above are refused by any bound.
  if (tokens.size() > 0 && top < 0x7fffffffu) {
    const int bound = static_cast<int>(top) + 1;
    check(expect_input_error([&] { myelin::read_token_shard(path, bound); }),
          "a vocabulary above every token refused the shard");
    if (top > 0)
      check(!expect_input_error([&] { myelin::read_token_shard(path, bound - 1); }),
            "a token at the vocabulary size was accepted");
  }
  if (tokens.wide)
    myelin::write_shard32(path, tokens.u32);
  else
    myelin::write_shard(path, tokens.u16);
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> again((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  // The header's unused ints are not kept: compare the first 3 and the tokens.
  check(again.size() == size && std::memcmp(again.data(), data, 12) == 0 &&
            std::memcmp(again.data() + 1024, data + 1024, size - 1024) == 0,
        "write_shard does not reproduce the tokens read");
  return 0;
}
