// Token shards in llm.c's format: 256 x int32 header (magic 20240520, version 1,
// token count), then the tokens as uint16.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace myelin {

constexpr int kShardMagic = 20240520;

// Reads and validates a shard: header, exact size, and (if vocab_size > 0)
// every token < vocab_size. Errors name the file and what was expected.
std::vector<std::uint16_t> read_shard(const std::string& path, int vocab_size);
// Token count from the header only (also validates header and size).
std::size_t shard_token_count(const std::string& path);
void write_shard(const std::string& path, const std::vector<std::uint16_t>& tokens);

} // namespace myelin
