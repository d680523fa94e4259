// Turns a token stream into llm.c shards: the first val_frac of the tokens go
// to <prefix>_val_000.bin, the rest to <prefix>_train_NNN.bin of at most
// shard_tokens tokens each. Returns the files written.
// With `record` > 1 (text made of fixed-length records, e.g. the synthetic
// task's lines) the validation share and the training shard size are rounded
// down to whole records, so every shard starts at a record: rows of a
// multiple of `record` tokens then hold whole records at fixed positions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace myelin {

struct ShardSplit {
  std::vector<std::string> train, val;
};

ShardSplit write_token_shards(const std::vector<std::uint16_t>& tokens, const std::string& out_dir,
                              const std::string& prefix, double val_frac, std::size_t shard_tokens,
                              std::size_t record = 1);

} // namespace myelin
