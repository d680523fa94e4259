#include "runtime/io/output_path.h"

#include <unistd.h>

#include <filesystem>

#include "runtime/util/error.h"

namespace fs = std::filesystem;

namespace myelin {
namespace {
// The folder `p` names, or "." for a bare file name.
fs::path folder_of(const fs::path& p) {
  const fs::path parent = p.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

void require_writable_folder(const fs::path& dir, const std::string& flag,
                             const std::string& path) {
  std::error_code ec;
  require(fs::is_directory(dir, ec), flag,
          "cannot write " + path + ": " + dir.string() + " is not a folder");
  require(access(dir.c_str(), W_OK | X_OK) == 0, flag,
          "cannot write " + path + ": folder " + dir.string() + " is not writable");
}
} // namespace

void check_output_file(const std::string& path, const std::string& flag) {
  std::error_code ec;
  const fs::path p(path);
  require(!fs::is_directory(p, ec), flag, path + " is a folder, expected a file name");
  const fs::path dir = folder_of(p);
  require(fs::exists(dir, ec), flag,
          "cannot write " + path + ": folder " + dir.string() + " does not exist");
  require_writable_folder(dir, flag, path);
}

void check_output_dir(const std::string& path, const std::string& flag, bool write) {
  std::error_code ec;
  fs::path p(path);
  if (fs::exists(p, ec)) {
    require(fs::is_directory(p, ec), flag, path + " exists and is not a folder");
    if (write) require_writable_folder(p, flag, path);
    return;
  }
  if (!write) return;
  // The nearest existing ancestor must let the run create the rest.
  p = fs::absolute(p, ec);
  while (p.has_parent_path() && p.parent_path() != p && !fs::exists(p, ec)) p = p.parent_path();
  require_writable_folder(p, flag, path);
}

} // namespace myelin
