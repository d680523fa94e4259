// XXH64, the 64-bit xxHash of Yann Collet (seed 0), written from its published
// specification: the checksum of every checkpoint file (recorded in the
// manifest) and of the training-state payload. Chosen over SHA-256 because it
// hashes at memory speed (checkpoints are gigabytes, written every few
// minutes), needs no library (the GPU build has no OpenSSL) and misses a random
// corruption with probability 2^-64. It is no defence against forgery, but
// neither would SHA-256 be: whoever can rewrite a file can rewrite the manifest
// beside it. The hex form is the one `xxhsum FILE` (default XXH64) prints.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace myelin {

// Streaming XXH64: add() any number of times, then digest() (which does not
// change the state, so more bytes may follow).
class Xxh64 {
 public:
  Xxh64();
  void add(const void* data, std::size_t n);
  std::uint64_t digest() const;

 private:
  std::array<std::uint64_t, 4> acc_;
  std::array<unsigned char, 32> buf_{};
  std::size_t buffered_ = 0;
  std::uint64_t total_ = 0;
};

std::uint64_t xxh64(const void* data, std::size_t n);
// XXH64 of a whole file, read in 1 MiB chunks; throws InputError naming the
// file if it cannot be read.
std::uint64_t xxh64_file(const std::string& path);
// 16 lowercase hex digits, most significant first.
std::string xxh64_hex(std::uint64_t h);
// The inverse of xxh64_hex, strictly: exactly 16 lowercase hex digits (no
// sign, prefix, spaces or upper case), else nullopt.
std::optional<std::uint64_t> parse_xxh64_hex(std::string_view s);

} // namespace myelin
