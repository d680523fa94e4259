#include "runtime/io/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "runtime/io/file_util.h"
#include "runtime/util/error.h"

namespace fs = std::filesystem;

namespace myelin {
namespace {
constexpr const char* kManifest = "manifest.txt";

std::optional<std::uint64_t> step_of(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.rfind("step_", 0) != 0 || name.find('.') != std::string::npos) return std::nullopt;
  const std::string digits = name.substr(5);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoull(digits);
}
} // namespace

CheckpointPaths checkpoint_paths(const std::string& dir, std::uint64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08llu", static_cast<unsigned long long>(step));
  return {dir + "/" + name + ".tmp", dir + "/" + name};
}

void begin_checkpoint(const CheckpointPaths& p) {
  std::error_code ec;
  fs::remove_all(p.tmp_dir, ec);
  fs::create_directories(p.tmp_dir, ec);
  if (ec)
    throw std::runtime_error(p.tmp_dir + ": cannot create checkpoint folder: " + ec.message());
}

void finish_checkpoint(const std::string& dir, const CheckpointPaths& p,
                       const std::map<std::string, std::string>& manifest, int keep) {
  write_atomic(p.tmp_dir + "/" + kManifest, [&](const ByteSink& out) {
    for (const auto& [k, v] : manifest) {
      const std::string line = k + "=" + v + "\n";
      out(line.data(), line.size());
    }
  });
  std::error_code ec;
  if (fs::exists(p.final_dir)) {
    // Same step written again: move the old one aside first, then drop it.
    const std::string old = p.final_dir + ".old";
    fs::remove_all(old, ec);
    fs::rename(p.final_dir, old, ec);
    fs::rename(p.tmp_dir, p.final_dir, ec);
    if (ec) throw std::runtime_error(p.final_dir + ": cannot publish checkpoint: " + ec.message());
    fs::remove_all(old, ec);
  } else {
    fs::rename(p.tmp_dir, p.final_dir, ec);
    if (ec) throw std::runtime_error(p.final_dir + ": cannot publish checkpoint: " + ec.message());
  }
  fsync_dir(dir);
  if (keep > 0) {
    std::vector<std::pair<std::uint64_t, fs::path>> all;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (auto s = step_of(e.path()); s && fs::exists(e.path() / kManifest))
        all.emplace_back(*s, e.path());
    std::sort(all.begin(), all.end());
    for (std::size_t i = 0; i + keep < all.size(); ++i) fs::remove_all(all[i].second, ec);
  }
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return std::nullopt;
  std::optional<std::pair<std::uint64_t, std::string>> best;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    auto s = step_of(e.path());
    if (!s || !fs::exists(e.path() / kManifest)) continue;
    if (!best || *s > best->first) best = std::make_pair(*s, e.path().string());
  }
  if (!best) return std::nullopt;
  return best->second;
}

std::map<std::string, std::string> read_manifest(const std::string& ckpt_dir) {
  const std::string path = ckpt_dir + "/" + kManifest;
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open checkpoint manifest");
  std::map<std::string, std::string> m;
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) throw InputError(path + ": malformed line '" + line + "'");
    m[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return m;
}

} // namespace myelin
