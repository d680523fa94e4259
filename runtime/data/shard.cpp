#include "runtime/data/shard.h"

#include <array>

#include "runtime/io/file_util.h"
#include "runtime/util/error.h"

namespace myelin {

std::size_t shard_token_count(const std::string& path) {
  const std::size_t size = file_size_or_throw(path);
  std::array<int, 256> h{};
  if (size < sizeof(h))
    throw InputError(path + ": truncated token shard (shorter than the 1024-byte header)");
  read_exact(path, 0, h.data(), sizeof(h));
  if (h[0] != kShardMagic)
    throw InputError(path + ": not a token shard (magic " + std::to_string(h[0]) + ", expected " +
                     std::to_string(kShardMagic) + ")");
  if (h[1] != 1)
    throw InputError(path + ": unsupported token shard version " + std::to_string(h[1]) +
                     " (expected 1)");
  if (h[2] < 0) throw InputError(path + ": negative token count in header");
  const std::size_t want = sizeof(h) + std::size_t(h[2]) * 2;
  if (size != want)
    throw InputError(path + ": token shard is " + std::to_string(size) + " bytes, expected " +
                     std::to_string(want) + " for " + std::to_string(h[2]) + " tokens" +
                     (size < want ? " (truncated)" : " (trailing bytes)"));
  return std::size_t(h[2]);
}

std::vector<std::uint16_t> read_shard(const std::string& path, int vocab_size) {
  const std::size_t n = shard_token_count(path);
  std::vector<std::uint16_t> tok(n);
  read_exact(path, 1024, tok.data(), n * 2);
  if (vocab_size > 0)
    for (std::size_t i = 0; i < n; ++i)
      if (tok[i] >= vocab_size)
        throw InputError(path + ": token " + std::to_string(tok[i]) + " at position " +
                         std::to_string(i) + " is outside the model's vocabulary (expected < " +
                         std::to_string(vocab_size) + ")");
  return tok;
}

void write_shard(const std::string& path, const std::vector<std::uint16_t>& tokens) {
  if (tokens.size() > 0x7fffffffu) throw std::invalid_argument("shard too large for llm.c format");
  std::array<int, 256> h{};
  h[0] = kShardMagic;
  h[1] = 1;
  h[2] = int(tokens.size());
  write_atomic(path, [&](const ByteSink& out) {
    out(h.data(), sizeof(h));
    out(tokens.data(), tokens.size() * 2);
  });
}

} // namespace myelin
