#include "runtime/data/shard.h"

#include <array>
#include <stdexcept>

#include "runtime/io/file_util.h"
#include "runtime/util/error.h"

namespace myelin {

namespace {
struct ShardHeader {
  std::size_t tokens = 0;
  bool wide = false;
};

ShardHeader checked_header(const std::string& path) {
  const std::size_t size = file_size_or_throw(path);
  std::array<int, 256> h{};
  if (size < sizeof(h))
    throw InputError(path + ": truncated token shard (shorter than the 1024-byte header)");
  read_exact(path, 0, h.data(), sizeof(h));
  if (h[0] != kShardMagic && h[0] != kShard32Magic)
    throw InputError(path + ": not a token shard (magic " + std::to_string(h[0]) + ", expected " +
                     std::to_string(kShardMagic) + " or " + std::to_string(kShard32Magic) + ")");
  const bool wide = h[0] == kShard32Magic;
  const int version = wide ? 7 : 1;
  if (h[1] != version)
    throw InputError(path + ": unsupported token shard version " + std::to_string(h[1]) +
                     " (expected " + std::to_string(version) + " with magic " +
                     std::to_string(h[0]) + ")");
  if (h[2] < 0) throw InputError(path + ": negative token count in header");
  // h[2] < 2^31, so the byte count fits in 64 bits.
  const std::size_t want = sizeof(h) + std::size_t(h[2]) * (wide ? 4 : 2);
  if (size != want)
    throw InputError(path + ": token shard is " + std::to_string(size) + " bytes, expected " +
                     std::to_string(want) + " for " + std::to_string(h[2]) + " tokens" +
                     (size < want ? " (truncated)" : " (trailing bytes)"));
  return {std::size_t(h[2]), wide};
}

template <class T> void check_vocab(const std::string& path, const std::vector<T>& tok, int vocab) {
  if (vocab <= 0) return;
  for (std::size_t i = 0; i < tok.size(); ++i)
    if (tok[i] >= std::uint32_t(vocab))
      throw InputError(path + ": token " + std::to_string(tok[i]) + " at position " +
                       std::to_string(i) + " is outside the model's vocabulary (expected < " +
                       std::to_string(vocab) + ")");
}

template <class T> void write_any(const std::string& path, const std::vector<T>& tokens) {
  if (tokens.size() > 0x7fffffffu) throw std::logic_error("shard too large for llm.c format");
  std::array<int, 256> h{};
  h[0] = sizeof(T) == 2 ? kShardMagic : kShard32Magic;
  h[1] = sizeof(T) == 2 ? 1 : 7;
  h[2] = int(tokens.size());
  write_atomic(path, [&](const ByteSink& out) {
    out(h.data(), sizeof(h));
    out(tokens.data(), tokens.size() * sizeof(T));
  });
}
} // namespace

std::size_t shard_token_count(const std::string& path) { return checked_header(path).tokens; }

TokenShard read_token_shard(const std::string& path, int vocab_size) {
  const ShardHeader h = checked_header(path);
  TokenShard s;
  s.wide = h.wide;
  if (h.wide) {
    s.u32.resize(h.tokens);
    read_exact(path, 1024, s.u32.data(), h.tokens * 4);
    check_vocab(path, s.u32, vocab_size);
  } else {
    s.u16.resize(h.tokens);
    read_exact(path, 1024, s.u16.data(), h.tokens * 2);
    check_vocab(path, s.u16, vocab_size);
  }
  return s;
}

std::vector<std::uint16_t> read_shard(const std::string& path, int vocab_size) {
  TokenShard s = read_token_shard(path, vocab_size);
  if (s.wide)
    throw InputError(path + ": uint32 token shard (version 7) where uint16 tokens are expected");
  return std::move(s.u16);
}

void write_shard(const std::string& path, const std::vector<std::uint16_t>& tokens) {
  write_any(path, tokens);
}

void write_shard32(const std::string& path, const std::vector<std::uint32_t>& tokens) {
  write_any(path, tokens);
}

} // namespace myelin
