#include "runtime/io/train_state.h"

#include <cstring>
#include <stdexcept>

#include "runtime/io/file_util.h"
#include "runtime/io/xxh64.h"
#include "runtime/util/error.h"

namespace myelin {
namespace {
constexpr char kMagic[8] = {'M', 'Y', 'E', 'L', 'I', 'N', 'T', 'S'};
constexpr std::uint32_t kVersion = 2;
constexpr std::uint32_t kMaxRanks = 1u << 20;
struct Header {
  char magic[8];
  std::uint32_t version, rank, ranks, dp, pp, zero;
  std::uint64_t step, epoch, shard, batch, rng, param_count, slice_begin, count;
};
static_assert(sizeof(Header) == 96, "training-state header layout");
} // namespace

void save_train_state(const std::string& path, const TrainState& s) {
  if (s.m.size() != s.v.size()) throw std::logic_error("train state: m and v differ in size");
  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kVersion;
  h.rank = s.rank;
  h.ranks = s.ranks;
  h.dp = s.dp;
  h.pp = s.pp;
  h.zero = s.zero;
  h.step = s.step;
  h.epoch = s.data.epoch;
  h.shard = s.data.shard;
  h.batch = s.data.batch;
  h.rng = s.rng;
  h.param_count = s.param_count;
  h.slice_begin = s.slice_begin;
  h.count = s.m.size();
  write_atomic(path, [&](const ByteSink& out) {
    Xxh64 sum;
    auto put = [&](const void* p, std::size_t n) {
      sum.add(p, n);
      out(p, n);
    };
    put(&h, sizeof(h));
    put(s.m.data(), s.m.size() * 4);
    put(s.v.data(), s.v.size() * 4);
    const std::uint64_t digest = sum.digest();
    out(&digest, sizeof(digest));
  });
}

TrainState load_train_state(const std::string& path) {
  const std::size_t size = file_size_or_throw(path);
  Header h{};
  if (size < sizeof(h)) throw InputError(path + ": truncated training-state file");
  read_exact(path, 0, &h, sizeof(h));
  if (std::memcmp(h.magic, kMagic, 8) != 0)
    throw InputError(path + ": not a training-state file (bad magic, expected MYELINTS)");
  if (h.version != kVersion)
    throw InputError(path + ": unsupported training-state version " + std::to_string(h.version) +
                     " (expected " + std::to_string(kVersion) + ")");
  const std::size_t want = sizeof(h) + h.count * 8 + 8;
  if (h.count > (std::size_t(1) << 40) || size != want)
    throw InputError(path + ": training-state file is " + std::to_string(size) +
                     " bytes, expected " + std::to_string(want) + " (truncated or corrupt)");
  TrainState s;
  s.m.resize(h.count);
  s.v.resize(h.count);
  std::uint64_t stored = 0;
  read_exact(path, sizeof(h), s.m.data(), h.count * 4);
  read_exact(path, sizeof(h) + h.count * 4, s.v.data(), h.count * 4);
  read_exact(path, sizeof(h) + h.count * 8, &stored, 8);
  Xxh64 sum;
  sum.add(&h, sizeof(h));
  sum.add(s.m.data(), h.count * 4);
  sum.add(s.v.data(), h.count * 4);
  if (sum.digest() != stored)
    throw InputError(path + ": training-state checksum mismatch (corrupt file)");
  // A valid checksum only says the bytes are as written: bound every field too.
  auto bound = [&](bool ok, const std::string& what) {
    if (!ok) throw InputError(path + ": " + what + " (corrupt training state)");
  };
  bound(h.step <= kMaxTrainStep, "step " + std::to_string(h.step) + " out of range (at most " +
                                     std::to_string(kMaxTrainStep) + ")");
  bound(h.ranks >= 1 && h.ranks <= kMaxRanks && h.rank < h.ranks,
        "rank " + std::to_string(h.rank) + " of " + std::to_string(h.ranks) + " out of range");
  bound(h.dp >= 1 && h.pp >= 1 && std::uint64_t(h.dp) * h.pp == h.ranks,
        "dp x pp = " + std::to_string(h.dp) + "x" + std::to_string(h.pp) + " is not " +
            std::to_string(h.ranks) + " ranks");
  bound(h.zero <= 1, "zero " + std::to_string(h.zero) + " is not 0 or 1");
  bound(h.slice_begin <= h.param_count && h.count <= h.param_count - h.slice_begin,
        "moment slice " + std::to_string(h.slice_begin) + "+" + std::to_string(h.count) +
            " exceeds the " + std::to_string(h.param_count) + " parameters");
  bound(h.rng != 0, "sampler RNG state is 0");
  s.step = h.step;
  s.data = {h.epoch, h.shard, h.batch};
  s.rng = h.rng;
  s.param_count = h.param_count;
  s.slice_begin = h.slice_begin;
  s.rank = h.rank;
  s.ranks = h.ranks;
  s.dp = h.dp;
  s.pp = h.pp;
  s.zero = h.zero;
  return s;
}

} // namespace myelin
