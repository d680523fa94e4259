#include "runtime/io/train_state.h"

#include <cstring>

#include "runtime/io/file_util.h"
#include "runtime/util/error.h"

namespace myelin {
namespace {
constexpr char kMagic[8] = {'M', 'Y', 'E', 'L', 'I', 'N', 'T', 'S'};
constexpr std::uint32_t kVersion = 1;
struct Header {
  char magic[8];
  std::uint32_t version, reserved;
  std::uint64_t step, epoch, shard, batch, rng, param_count, slice_begin, count;
};
} // namespace

void save_train_state(const std::string& path, const TrainState& s) {
  if (s.m.size() != s.v.size()) throw std::invalid_argument("train state: m and v differ in size");
  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kVersion;
  h.step = s.step;
  h.epoch = s.data.epoch;
  h.shard = s.data.shard;
  h.batch = s.data.batch;
  h.rng = s.rng;
  h.param_count = s.param_count;
  h.slice_begin = s.slice_begin;
  h.count = s.m.size();
  write_atomic(path, [&](const ByteSink& out) {
    Fnv1a sum;
    auto put = [&](const void* p, std::size_t n) {
      sum.add(p, n);
      out(p, n);
    };
    put(&h, sizeof(h));
    put(s.m.data(), s.m.size() * 4);
    put(s.v.data(), s.v.size() * 4);
    out(&sum.h, sizeof(sum.h));
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
  s.step = h.step;
  s.data = {h.epoch, h.shard, h.batch};
  s.rng = h.rng;
  s.param_count = h.param_count;
  s.slice_begin = h.slice_begin;
  s.m.resize(h.count);
  s.v.resize(h.count);
  std::uint64_t stored = 0;
  read_exact(path, sizeof(h), s.m.data(), h.count * 4);
  read_exact(path, sizeof(h) + h.count * 4, s.v.data(), h.count * 4);
  read_exact(path, sizeof(h) + h.count * 8, &stored, 8);
  Fnv1a sum;
  sum.add(&h, sizeof(h));
  sum.add(s.m.data(), h.count * 4);
  sum.add(s.v.data(), h.count * 4);
  if (sum.h != stored) throw InputError(path + ": training-state checksum mismatch (corrupt file)");
  return s;
}

} // namespace myelin
