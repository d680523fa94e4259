#include "runtime/io/checkpoint.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <vector>

#include "runtime/io/file_util.h"
#include "runtime/io/finite_check.h"
#include "runtime/io/xxh64.h"
#include "runtime/util/error.h"

namespace fs = std::filesystem;

namespace myelin {
namespace {
constexpr const char* kManifest = "manifest.txt";
constexpr const char* kFormat = "2";
constexpr int kMaxRanks = 1 << 20;

// Digits of a "step_<digits>" name, or nullopt for any other name.
std::optional<std::string> step_digits(const std::string& name) {
  if (name.rfind("step_", 0) != 0) return std::nullopt;
  std::string digits = name.substr(5);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return digits;
}

// Unsigned decimal in [lo, hi], or nullopt (no sign, no spaces, no overflow).
std::optional<std::uint64_t> parse_uint(const std::string& s, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi)
    return std::nullopt;
  return v;
}

// The step of a checkpoint folder name this program could have written.
std::optional<std::uint64_t> step_of(const std::string& name) {
  const auto digits = step_digits(name);
  return digits ? parse_uint(*digits, 0, kMaxTrainStep) : std::nullopt;
}

std::string folder_name(const std::string& dir) {
  const fs::path p = fs::path(dir).lexically_normal();
  return (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
}

// The files a checkpoint of `ranks` ranks holds besides its manifest.
std::vector<std::string> checkpoint_files(int ranks) {
  std::vector<std::string> f = {"model.bin"};
  for (int r = 0; r < ranks; ++r) f.push_back("state_" + std::to_string(r) + ".bin");
  return f;
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
                       const CheckpointLayout& layout, int keep) {
  std::map<std::string, std::string> manifest = {{"format", kFormat},
                                                 {"step", std::to_string(layout.step)},
                                                 {"ranks", std::to_string(layout.ranks)},
                                                 {"dp", std::to_string(layout.dp)},
                                                 {"pp", std::to_string(layout.pp)},
                                                 {"zero", std::to_string(layout.zero)},
                                                 {"model", layout.model}};
  for (const auto& f : checkpoint_files(layout.ranks)) {
    const std::string path = p.tmp_dir + "/" + f;
    std::error_code ec;
    const auto bytes = fs::file_size(path, ec);
    if (ec) throw std::runtime_error(path + ": checkpoint file not written: " + ec.message());
    manifest["file." + f] = xxh64_hex(xxh64_file(path)) + " " + std::to_string(bytes);
  }
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
      if (auto s = step_of(e.path().filename().string()); s && fs::exists(e.path() / kManifest))
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
    const std::string name = e.path().filename().string();
    std::error_code kind;
    if (!step_digits(name) || !e.is_directory(kind)) continue;
    const auto s = step_of(name);
    require(s.has_value(), e.path().string(),
            "step number out of range (at most " + std::to_string(kMaxTrainStep) +
                "): not a checkpoint this program wrote; move it away or pass --resume-from");
    if (!best || *s > best->first) best = std::make_pair(*s, e.path().string());
  }
  if (ec) throw InputError(dir + ": cannot list checkpoint folder: " + ec.message());
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
    if (!m.emplace(line.substr(0, eq), line.substr(eq + 1)).second)
      throw InputError(path + ": repeated key '" + line.substr(0, eq) + "'");
  }
  return m;
}

CheckpointInfo read_checkpoint(const std::string& ckpt_dir) {
  std::error_code ec;
  require(fs::is_directory(ckpt_dir, ec), ckpt_dir, "no such checkpoint folder");
  const auto folder_step = step_of(folder_name(ckpt_dir));
  require(folder_step.has_value(), ckpt_dir,
          "not a checkpoint folder name (expected step_<N>, N at most " +
              std::to_string(kMaxTrainStep) + ")");
  require(fs::exists(fs::path(ckpt_dir) / kManifest, ec), ckpt_dir,
          "no manifest.txt (incomplete or damaged checkpoint)");
  auto m = read_manifest(ckpt_dir);
  const std::string mpath = ckpt_dir + "/" + kManifest;
  require(m.count("format") != 0, mpath,
          "no format line: written by an older myelin without checksums, it cannot be verified");
  require(m["format"] == kFormat, mpath,
          "unsupported manifest format '" + m["format"] + "' (expected " + kFormat + ")");
  auto number = [&](const char* key, std::uint64_t lo, std::uint64_t hi) {
    const auto it = m.find(key);
    require(it != m.end(), mpath, std::string("no ") + key + " line");
    const auto v = parse_uint(it->second, lo, hi);
    require(v.has_value(), mpath,
            std::string(key) + "=" + it->second + " is not a number in " + std::to_string(lo) +
                ".." + std::to_string(hi));
    m.erase(it);
    return *v;
  };
  CheckpointInfo ck;
  ck.dir = ckpt_dir;
  auto& l = ck.layout;
  l.step = number("step", 0, kMaxTrainStep);
  l.ranks = int(number("ranks", 1, kMaxRanks));
  l.dp = int(number("dp", 1, kMaxRanks));
  l.pp = int(number("pp", 1, kMaxRanks));
  l.zero = int(number("zero", 0, 1));
  m.erase("format");
  require(m.count("model") != 0, mpath, "no model line");
  l.model = m["model"];
  m.erase("model");
  require(l.step == *folder_step, mpath,
          "step=" + std::to_string(l.step) + " but the folder is " + folder_name(ckpt_dir));
  require(std::int64_t(l.dp) * l.pp == l.ranks, mpath,
          "dp x pp = " + std::to_string(l.dp) + "x" + std::to_string(l.pp) +
              " but ranks=" + std::to_string(l.ranks));
  for (const auto& f : checkpoint_files(l.ranks)) {
    const auto it = m.find("file." + f);
    require(it != m.end(), mpath, "no checksum line for " + f + " (file." + f + "=)");
    const std::string& v = it->second;
    std::uint64_t hash = 0;
    std::optional<std::uint64_t> bytes;
    if (v.size() > 17 && v[16] == ' ') {
      const auto [end, err] = std::from_chars(v.data(), v.data() + 16, hash, 16);
      if (err == std::errc() && end == v.data() + 16)
        bytes = parse_uint(v.substr(17), 0, UINT64_MAX);
    }
    require(bytes.has_value(), mpath, "file." + f + "=" + v + " is not '<16 hex digits> <bytes>'");
    ck.files[f] = {hash, *bytes};
    m.erase(it);
    require(fs::is_regular_file(fs::path(ckpt_dir) / f, ec), ckpt_dir + "/" + f,
            "missing (listed in the manifest)");
  }
  require(m.empty(), mpath,
          "unexpected line '" + (m.empty() ? "" : m.begin()->first) +
              "' (a file or key this layout does not have)");
  for (const auto& e : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = e.path().filename().string();
    require(name == kManifest || ck.files.count(name) != 0, e.path().string(),
            "unexpected file in the checkpoint (not in the manifest)");
  }
  if (ec) throw InputError(ckpt_dir + ": cannot list checkpoint folder: " + ec.message());
  return ck;
}

void verify_checkpoint_files(const CheckpointInfo& ck) {
  for (const auto& [name, want] : ck.files) {
    const std::string path = ck.dir + "/" + name;
    const std::uint64_t bytes = file_size_or_throw(path);
    require(bytes == want.bytes, path,
            std::to_string(bytes) + " bytes but the manifest says " + std::to_string(want.bytes) +
                " (truncated or damaged checkpoint)");
    const std::uint64_t h = xxh64_file(path);
    require(h == want.xxh64, path,
            "checksum mismatch (xxh64 " + xxh64_hex(h) + ", the manifest says " +
                xxh64_hex(want.xxh64) + "): damaged checkpoint");
  }
}

ModelFile load_checkpoint_model(const CheckpointInfo& ck) {
  const std::string path = ck.dir + "/model.bin";
  ModelFile mf = load_model(path);
  require(mf.config.describe() == ck.layout.model, path,
          "shape " + mf.config.describe() + " but the manifest says model=" + ck.layout.model);
  return mf;
}

TrainState load_checkpoint_state(const CheckpointInfo& ck, int rank, const ModelConfig& cfg) {
  const std::string path = ck.dir + "/state_" + std::to_string(rank) + ".bin";
  TrainState st = load_train_state(path);
  const auto& l = ck.layout;
  require(st.step == l.step, path,
          "step " + std::to_string(st.step) +
              " but the manifest says step=" + std::to_string(l.step));
  auto layout = [](auto rank_, auto ranks, auto dp, auto pp, auto zero) {
    return "rank " + std::to_string(rank_) + " of " + std::to_string(ranks) +
           " (dp x pp = " + std::to_string(dp) + "x" + std::to_string(pp) + ", zero " +
           std::to_string(zero) + ")";
  };
  const std::string have = layout(st.rank, st.ranks, st.dp, st.pp, st.zero);
  const std::string want = layout(rank, l.ranks, l.dp, l.pp, l.zero);
  require(have == want, path, "written by " + have + " but the manifest says " + want);
  const ParamLayout lay(cfg);
  require(st.param_count == lay.total, path,
          "moments for " + std::to_string(st.param_count) + " parameters but model.bin has " +
              std::to_string(lay.total));
  require_finite(path, "first moment", cfg, st.m, st.slice_begin);
  require_finite(path, "second moment", cfg, st.v, st.slice_begin, true);
  return st;
}

} // namespace myelin
