// A contributor's error-feedback residual for one job: what its uploads have
// dropped so far (compress.h, encode_with_feedback), added to its next
// upload. It lives in memory and in <job dir>/residual.bin, so a restarted
// contributor keeps it.
//
// Guarantees: a residual is used only for the job, the element count and
// the round it was saved for (the round after the upload that left it);
// anything else (another job or model size, a skipped round, whose global
// model the residual's mass no longer matches, a damaged or foreign file) is
// dropped and the reason returned, never applied. The file is written
// atomically (temporary file, fsync, rename); a non-finite residual is never
// kept. File (little-endian): magic "MYRS", version 1, job (i64), round
// (i64), element count (u64), FNV-1a of the values (u64), then n fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace myelin::pool {

constexpr std::size_t kResidualHeaderBytes = 40;

// Writes the residual for (job, round) to path atomically.
void save_residual(const std::string& path, std::int64_t job, std::int64_t round,
                   std::span<const float> r);
// The residual saved at path for (job, round, n); nullopt when there is
// none, with `why` saying why ("" when there is no file at all).
std::optional<std::vector<float>> load_residual(const std::string& path, std::int64_t job,
                                                std::int64_t round, std::size_t n,
                                                std::string& why);

// The residual of one contributor: in memory, mirrored in a file of the
// job's directory.
class ErrorFeedback {
 public:
  // The residual for round `round` of job `job` (n elements) whose directory
  // is job_dir: the one kept in memory, else the file's (a restart), else
  // zeros. `note` gets a line for the log: "residual dropped: <reason>" when
  // one existed but was not usable, "residual for round R read from FILE"
  // when it came from the file, "" otherwise.
  std::vector<float> take(const std::string& job_dir, std::int64_t job, std::int64_t round,
                          std::size_t n, std::string& note);
  // Keeps r as the residual for (job, round) in memory and in job_dir's
  // file. Returns "" or, for a residual with a non-finite value, the reason
  // it was dropped instead (memory and file cleared).
  std::string keep(const std::string& job_dir, std::int64_t job, std::int64_t round,
                   std::vector<float> r);
  static std::string file_in(const std::string& job_dir);

 private:
  std::int64_t job_ = -1, round_ = -1;
  std::vector<float> r_;
  bool held_ = false;
};

} // namespace myelin::pool
