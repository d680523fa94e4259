#include "runtime/pool/residual.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "runtime/io/file_util.h"
#include "runtime/pool/validate.h"
#include "runtime/util/checked.h"

namespace myelin::pool {
namespace {
constexpr std::uint32_t kMagic = 0x5352594d; // "MYRS"
constexpr std::uint32_t kVersion = 1;
struct Header {
  std::uint32_t magic, version;
  std::int64_t job, round;
  std::uint64_t n, checksum;
};
static_assert(sizeof(Header) == kResidualHeaderBytes);

std::uint64_t checksum(std::span<const float> r) {
  Fnv1a h;
  h.add(r.data(), 4 * r.size());
  return h.h;
}

// Why a residual made for (job, round, n) does not apply to (want_*); "" when it does.
std::string mismatch(std::int64_t job, std::int64_t round, std::uint64_t n, std::int64_t want_job,
                     std::int64_t want_round, std::size_t want_n) {
  if (job != want_job)
    return "it is for job " + std::to_string(job) + ", this is job " + std::to_string(want_job);
  if (n != want_n)
    return "it has " + std::to_string(n) + " elements, the model " + std::to_string(want_n);
  if (round != want_round)
    return "it is for round " + std::to_string(round) + ", this upload is for round " +
           std::to_string(want_round) + " (it carries only into the next round)";
  return "";
}
} // namespace

void save_residual(const std::string& path, std::int64_t job, std::int64_t round,
                   std::span<const float> r) {
  const Header h{kMagic, kVersion, job, round, r.size(), checksum(r)};
  // No fsync on the contributor's hot path: a restarted process finds the
  // file (the page cache outlives it); after a machine crash a lost or torn
  // residual fails its checksum and is dropped with the reason.
  write_atomic(
      path,
      [&](const ByteSink& out) {
        out(&h, sizeof(h));
        out(r.data(), 4 * r.size());
      },
      Durability::kCache);
}

std::optional<std::vector<float>> load_residual(const std::string& path, std::int64_t job,
                                                std::int64_t round, std::size_t n,
                                                std::string& why) {
  why.clear();
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  Header h{};
  if (ec || size < sizeof(h) || !in.read(reinterpret_cast<char*>(&h), sizeof(h))) {
    why = path + ": shorter than its header";
    return std::nullopt;
  }
  if (h.magic != kMagic || h.version != kVersion) {
    why = path + ": not a version 1 residual file";
    return std::nullopt;
  }
  if (why = mismatch(h.job, h.round, h.n, job, round, n); !why.empty()) return std::nullopt;
  const auto bytes = checked_add({sizeof(h), checked_mul({4, n})});
  if (!bytes || size != *bytes) {
    why = path + ": " + std::to_string(size) + " bytes, expected " +
          (bytes ? std::to_string(*bytes) : std::string("an overflowing size"));
    return std::nullopt;
  }
  std::vector<float> r(n);
  if (!in.read(reinterpret_cast<char*>(r.data()), std::streamsize(4 * n)) ||
      checksum(r) != h.checksum) {
    why = path + ": checksum mismatch (damaged)";
    return std::nullopt;
  }
  return r;
}

std::string ErrorFeedback::file_in(const std::string& job_dir) {
  return (std::filesystem::path(job_dir) / "residual.bin").string();
}

std::vector<float> ErrorFeedback::take(const std::string& job_dir, std::int64_t job,
                                       std::int64_t round, std::size_t n, std::string& note) {
  note.clear();
  if (held_) {
    held_ = false;
    const std::string why = mismatch(job_, round_, r_.size(), job, round, n);
    if (why.empty()) return std::move(r_);
    // Another job's residual: that job's file may still serve it later.
    if (job_ == job) {
      note = "residual dropped: " + why;
      return std::vector<float>(n, 0.0f);
    }
  }
  std::string why;
  const std::string file = file_in(job_dir);
  if (auto r = load_residual(file, job, round, n, why)) {
    note = "residual for round " + std::to_string(round) + " read from " + file;
    return std::move(*r);
  }
  if (!why.empty()) note = "residual dropped: " + why;
  return std::vector<float>(n, 0.0f);
}

std::string ErrorFeedback::keep(const std::string& job_dir, std::int64_t job, std::int64_t round,
                                std::vector<float> r) {
  if (std::string bad = check_finite(r); !bad.empty()) {
    held_ = false;
    r_.clear();
    std::error_code ec;
    std::filesystem::remove(file_in(job_dir), ec);
    return "not finite (" + bad + ")";
  }
  save_residual(file_in(job_dir), job, round, r);
  job_ = job, round_ = round, r_ = std::move(r), held_ = true;
  return "";
}

} // namespace myelin::pool
