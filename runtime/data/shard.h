// Token shards in llm.c's formats: 256 x int32 header (magic, version, token
// count), then the tokens: version 1 (magic 20240520) holds uint16 tokens,
// version 7 (magic 20240801) uint32 tokens, for vocabularies above 65,535.
// Reading checks magic and version together, the exact file size, and (with
// vocab_size > 0) every token < vocab_size; errors are InputError naming the
// file and what was expected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace myelin {

constexpr int kShardMagic = 20240520;   // version 1, uint16 tokens
constexpr int kShard32Magic = 20240801; // version 7, uint32 tokens

// The tokens of one shard in their stored width (a uint16 shard is not widened:
// the loader reads either without a copy).
struct TokenShard {
  std::vector<std::uint16_t> u16; // version 1
  std::vector<std::uint32_t> u32; // version 7
  bool wide = false;
  std::size_t size() const { return wide ? u32.size() : u16.size(); }
  std::uint32_t operator[](std::size_t i) const { return wide ? u32[i] : u16[i]; }
};

// Reads and validates a shard of either version.
TokenShard read_token_shard(const std::string& path, int vocab_size);
// A version 1 shard's tokens (a version 7 shard is refused naming the file).
std::vector<std::uint16_t> read_shard(const std::string& path, int vocab_size);
// Token count from the header only (also validates header and size).
std::size_t shard_token_count(const std::string& path);
void write_shard(const std::string& path, const std::vector<std::uint16_t>& tokens);
void write_shard32(const std::string& path, const std::vector<std::uint32_t>& tokens);

} // namespace myelin
