// File helpers: whole-file reads with clear errors, atomic writes (temporary
// file, flush, fsync, rename), and a 64-bit FNV-1a checksum.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace myelin {

// Reads exactly `n` bytes at `offset`; throws InputError naming the file if it is
// missing or shorter than that.
void read_exact(const std::string& path, std::size_t offset, void* dst, std::size_t n);
std::size_t file_size_or_throw(const std::string& path);

// Writes a file atomically: `write` fills a temporary file in the same folder
// through the given sink; it is flushed, fsynced and renamed over `path`.
// Durability::kCache skips both fsyncs, for a file a crash may lose (never
// half-written: the rename is still atomic) because it is checked before use
// and fetched again, such as a contributor's copy of the global model.
using ByteSink = std::function<void(const void*, std::size_t)>;
enum class Durability { kFsync, kCache };
void write_atomic(const std::string& path, const std::function<void(const ByteSink&)>& write,
                  Durability durability = Durability::kFsync);
// fsync a directory so a rename inside it is durable.
void fsync_dir(const std::string& dir);

struct Fnv1a {
  std::uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* p, std::size_t n) {
    auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 0x100000001b3ull;
    }
  }
};

// Sorted list of files matching a shell glob; throws InputError naming `flag`
// if nothing matches.
std::vector<std::string> glob_files(const std::string& pattern, const std::string& flag);

} // namespace myelin
