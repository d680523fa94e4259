// Turns a token stream into llm.c shards: the first val_frac of the tokens go
// to <prefix>_val_000.bin, the rest to <prefix>_train_NNN.bin of at most
// shard_tokens tokens each. Returns the files written.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace myelin {

struct ShardSplit {
  std::vector<std::string> train, val;
};

ShardSplit write_token_shards(const std::vector<std::uint16_t>& tokens, const std::string& out_dir,
                              const std::string& prefix, double val_frac, std::size_t shard_tokens);

} // namespace myelin
