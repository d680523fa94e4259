#include "runtime/data/make_shards.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "runtime/data/shard.h"
#include "runtime/util/error.h"

namespace myelin {

ShardSplit write_token_shards(const std::vector<std::uint16_t>& tokens, const std::string& out_dir,
                              const std::string& prefix, double val_frac, std::size_t shard_tokens,
                              std::size_t record) {
  require(val_frac >= 0 && val_frac < 1, "--val-frac", "expected a value in [0, 1)");
  require(shard_tokens >= 2 && shard_tokens <= 0x7fffffffu, "--shard-tokens",
          "expected 2..2147483647 (llm.c shards count tokens in an int32)");
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  require(!ec, "--out", "cannot create folder " + out_dir + ": " + ec.message());
  record = std::max<std::size_t>(record, 1);
  const std::size_t nval = std::size_t(double(tokens.size()) * val_frac) / record * record;
  if (shard_tokens >= record) shard_tokens = shard_tokens / record * record;
  require(nval <= 0x7fffffffu, "--val-frac",
          "the validation shard would hold " + std::to_string(nval) +
              " tokens, above 2147483647 (llm.c shards count tokens in an int32)");
  ShardSplit out;
  auto name = [&](const char* split, std::size_t i) {
    char b[64];
    std::snprintf(b, sizeof(b), "_%s_%03zu.bin", split, i);
    return out_dir + "/" + prefix + b;
  };
  if (nval > 0) {
    out.val.push_back(name("val", 0));
    write_shard(out.val.back(), {tokens.begin(), tokens.begin() + nval});
  }
  std::size_t i = 0;
  for (std::size_t at = nval; at < tokens.size(); at += shard_tokens, ++i) {
    const std::size_t end = std::min(tokens.size(), at + shard_tokens);
    out.train.push_back(name("train", i));
    write_shard(out.train.back(), {tokens.begin() + at, tokens.begin() + end});
  }
  return out;
}

} // namespace myelin
