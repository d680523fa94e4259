#include "runtime/pool/shard_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <stdexcept>

#include "runtime/io/xxh64.h"
#include "runtime/pool/client.h"

namespace fs = std::filesystem;

namespace myelin::pool {
namespace {

// An exclusive flock on a file, held for the object's lifetime.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT, 0644)) {
    if (fd_ < 0) throw std::runtime_error(path + ": cannot open the lock file");
    while (::flock(fd_, LOCK_EX) != 0)
      if (errno != EINTR) {
        ::close(fd_);
        throw std::runtime_error(path + ": cannot lock");
      }
  }
  ~FileLock() { ::close(fd_); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

// Size and modification time (ns) of a regular file; false if there is none.
bool stat_file(const std::string& path, std::uintmax_t& size, std::int64_t& mtime_ns) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  size = std::uintmax_t(st.st_size);
  mtime_ns = std::int64_t(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return true;
}

} // namespace

ShardCache::ShardCache(std::string root, bool quiet) : root_(std::move(root)), quiet_(quiet) {
  fs::create_directories(root_);
}

void ShardCache::say(const std::string& s) const {
  if (!quiet_) std::cout << "contribute: " << s << std::endl;
}

std::uint64_t ShardCache::hash_of(const std::string& path) {
  ++hashed_;
  return xxh64_file(path);
}

bool ShardCache::holds(const std::string& path, std::uint64_t bytes, std::uint64_t hash) {
  std::uintmax_t size = 0;
  std::int64_t mtime = 0;
  if (!stat_file(path, size, mtime)) return false;
  if (size != bytes) return false;
  auto it = seen_.find(path);
  if (it == seen_.end() || it->second.size != size || it->second.mtime_ns != mtime)
    it = seen_.insert_or_assign(path, Seen{size, mtime, hash_of(path)}).first;
  return it->second.hash == hash;
}

ShardCache::Fetched ShardCache::fetch(const ShardInfo& s, const Download& download) {
  const std::string hex = xxh64_hex(s.hash);
  const std::string name = "shard " + std::to_string(s.index) + " (xxh64 " + hex + ")";
  const std::string file = (fs::path(root_) / (hex + ".bin")).string();
  const std::string part = file + ".part";
  FileLock lock((fs::path(root_) / (hex + ".lock")).string());
  Fetched out{file, 0};
  if (holds(file, s.bytes, s.hash)) return out;
  std::error_code ec;
  if (fs::exists(file, ec)) {
    say(name + ": the cached copy does not match its hash: deleted, downloading it again");
    fs::remove(file, ec);
  }
  for (int attempt = 1;; ++attempt) {
    const auto have = fs::file_size(part, ec);
    if (ec || have < s.bytes) {
      if (!ec && have > 0)
        say(name + ": resuming the download at byte " + std::to_string(have) + " of " +
            std::to_string(s.bytes));
      try {
        out.downloaded += download(part);
      } catch (const PoolError& e) {
        // 416: the server has fewer bytes than the part; 206 with another
        // range than asked. Start over; anything else is the caller's.
        if (e.status() != 416 && e.status() != 206) throw;
        fs::remove(part, ec);
        say(name + ": " + e.what() + "; downloading it whole");
        continue;
      }
    }
    std::uintmax_t size = 0;
    std::int64_t mtime = 0;
    const bool there = stat_file(part, size, mtime);
    const std::uint64_t got = there && size == s.bytes ? hash_of(part) : 0;
    if (there && size == s.bytes && got == s.hash) {
      fs::rename(part, file);
      stat_file(file, size, mtime);
      seen_.insert_or_assign(file, Seen{size, mtime, got});
      return out;
    }
    fs::remove(part, ec);
    const std::string found = std::to_string(size) + " bytes, xxh64 " + xxh64_hex(got) +
                              "; expected " + std::to_string(s.bytes) + " bytes";
    if (attempt >= kShardAttempts)
      throw std::runtime_error(name + ": the download does not match its hash after " +
                               std::to_string(attempt) + " tries (" + found + ")");
    say(name + ": the download does not match its hash (" + found + "): deleted, trying again");
  }
}

} // namespace myelin::pool
