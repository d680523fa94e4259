// The contributor's cache of training shards, shared by every job and every
// run that uses the same work folder: a shard lives once, named by its
// XXH64, as ROOT/<16 hex digits>.bin, and is used only after its bytes hash
// to what the coordinator announced (protocol.h ShardInfo). Guarantees:
//  - a file is hashed once per process while its size and modification time
//    stay the same; a cached file whose bytes changed (damaged disk, a bit
//    flip, an edit) fails its hash, is deleted and downloaded again;
//  - a download goes to ROOT/<hash>.bin.part and resumes from what is there
//    (an interrupted earlier try, even in an earlier process); the result is
//    renamed into place only after its hash matches; a mismatch deletes it
//    and downloads again, at most kShardAttempts times, then throws an error
//    naming the shard;
//  - processes sharing ROOT take turns per shard (an flock on
//    ROOT/<hash>.lock), so two contributors never write one .part at once.
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <string>

#include "runtime/pool/protocol.h"

namespace myelin::pool {

inline constexpr int kShardAttempts = 3;

class ShardCache {
 public:
  ShardCache(std::string root, bool quiet);

  // One resumable GET of the shard into the given .part file (e.g. a
  // PoolClient::download_resume with retries); returns the bytes received.
  using Download = std::function<std::uint64_t(const std::string& part)>;
  struct Fetched {
    std::string path;             // ROOT/<hash>.bin, verified
    std::uint64_t downloaded = 0; // bytes received for it by this call
  };
  Fetched fetch(const ShardInfo& s, const Download& download);

  // Whole-file hashes computed by this object (for tests and logs).
  std::uint64_t files_hashed() const { return hashed_; }

 private:
  // Whether `path` holds `bytes` bytes hashing to `hash` (memoised by size
  // and modification time).
  bool holds(const std::string& path, std::uint64_t bytes, std::uint64_t hash);
  std::uint64_t hash_of(const std::string& path);
  void say(const std::string& s) const;

  struct Seen {
    std::uintmax_t size = 0;
    std::int64_t mtime_ns = 0;
    std::uint64_t hash = 0;
  };
  std::string root_;
  bool quiet_;
  std::map<std::string, Seen> seen_;
  std::uint64_t hashed_ = 0;
};

} // namespace myelin::pool
