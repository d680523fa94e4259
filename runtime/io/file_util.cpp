#include "runtime/io/file_util.h"

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "runtime/util/error.h"

namespace myelin {
namespace {
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;
} // namespace

std::size_t file_size_or_throw(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw InputError(path + ": no such file (expected a regular file)");
  auto n = std::filesystem::file_size(path, ec);
  if (ec) throw InputError(path + ": cannot read size: " + ec.message());
  return static_cast<std::size_t>(n);
}

void read_exact(const std::string& path, std::size_t offset, void* dst, std::size_t n) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) throw InputError(path + ": cannot open: " + std::strerror(errno));
  if (std::fseek(f.get(), static_cast<long>(offset), SEEK_SET) != 0)
    throw InputError(path + ": cannot seek to byte " + std::to_string(offset));
  if (std::fread(dst, 1, n, f.get()) != n)
    throw InputError(path + ": truncated (expected " + std::to_string(n) + " bytes at offset " +
                     std::to_string(offset) + ")");
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_atomic(const std::string& path, const std::function<void(const ByteSink&)>& write,
                  Durability durability) {
  const bool sync = durability == Durability::kFsync;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    FilePtr f(std::fopen(tmp.c_str(), "wb"));
    if (!f) throw std::runtime_error(tmp + ": cannot create: " + std::strerror(errno));
    ByteSink sink = [&](const void* p, std::size_t n) {
      if (n && std::fwrite(p, 1, n, f.get()) != n)
        throw std::runtime_error(tmp + ": write failed: " + std::strerror(errno));
    };
    try {
      write(sink);
      if (std::fflush(f.get()) != 0 || (sync && ::fsync(::fileno(f.get())) != 0))
        throw std::runtime_error(tmp + ": flush failed: " + std::strerror(errno));
    } catch (...) {
      f.reset();
      std::remove(tmp.c_str());
      throw;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": rename failed: " + std::strerror(errno));
  }
  if (sync) fsync_dir(std::filesystem::path(path).parent_path().string());
}

std::vector<std::string> glob_files(const std::string& pattern, const std::string& flag) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0)
    for (std::size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  if (out.empty()) throw InputError(flag + ": no file matches '" + pattern + "'");
  return out;
}

} // namespace myelin
