#include "runtime/data/loader.h"

#include <numeric>

#include "runtime/data/shard.h"
#include "runtime/io/file_util.h"
#include "runtime/util/error.h"
#include "runtime/util/rng.h"

namespace myelin {

namespace {
// inputs get tok[0..n), targets tok[1..n]; token ids are below the vocabulary
// bound (at most 2^20), so they fit in int.
template <class T> void copy_rows(const T* tok, std::size_t n, int* inputs, int* targets) {
  for (std::size_t i = 0; i < n; ++i) {
    inputs[i] = static_cast<int>(tok[i]);
    targets[i] = static_cast<int>(tok[i + 1]);
  }
}
} // namespace

std::vector<std::uint64_t> permutation(std::uint64_t n, std::uint64_t seed) {
  std::vector<std::uint64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  Rng64 rng(seed);
  for (std::uint64_t i = n; i > 1; --i) std::swap(p[i - 1], p[rng.below(i)]);
  return p;
}

DataLoader::DataLoader(const std::string& pattern, const std::string& flag, int B, int T, int rank,
                       int ranks, int vocab_size, bool shuffle, std::uint64_t seed)
    : files_(glob_files(pattern, flag)), B_(B), T_(T), rank_(rank), ranks_(ranks),
      vocab_(vocab_size), shuffle_(shuffle), seed_(seed) {
  const std::uint64_t G = std::uint64_t(ranks) * B * T;
  for (const auto& f : files_) {
    const std::size_t n = shard_token_count(f);
    const std::uint64_t nb = n > 0 ? (n - 1) / G : 0;
    if (nb == 0)
      throw InputError(f + ": token shard holds " + std::to_string(n) +
                       " tokens, fewer than one global batch needs (" + std::to_string(G + 1) +
                       " = ranks x batch-size x seq-len + 1)");
    batches_.push_back(nb);
  }
  set_position({});
}

std::uint64_t DataLoader::batches_per_epoch() const {
  return std::accumulate(batches_.begin(), batches_.end(), std::uint64_t(0));
}

void DataLoader::set_position(const LoaderPosition& p) {
  if (p.shard >= files_.size()) throw InputError("data position: shard index out of range");
  pos_ = p;
  batch_order_.clear();
  if (pos_.batch >= batches_[file_at(pos_.shard)])
    throw InputError("data position: batch index out of range");
}

LoaderPosition position_after(const std::vector<std::uint64_t>& batches_per_file, std::uint64_t k) {
  std::uint64_t total = 0;
  for (auto b : batches_per_file) total += b;
  if (total == 0) throw InputError("data: no complete batch in the shards");
  LoaderPosition p;
  p.epoch = k / total;
  std::uint64_t rem = k % total;
  for (std::size_t f = 0; f < batches_per_file.size(); ++f) {
    if (rem < batches_per_file[f]) {
      p.shard = f;
      p.batch = rem;
      break;
    }
    rem -= batches_per_file[f];
  }
  return p;
}

LoaderPosition DataLoader::position_at(std::uint64_t k) const {
  return position_after(batches_, k);
}

std::size_t DataLoader::file_at(std::uint64_t shard_pos) {
  if (!shuffle_) return shard_pos;
  if (shard_order_epoch_ != pos_.epoch) {
    auto perm = permutation(files_.size(), seed_ * 1000003ull + pos_.epoch);
    shard_order_.assign(perm.begin(), perm.end());
    shard_order_epoch_ = pos_.epoch;
  }
  return shard_order_[shard_pos];
}

std::uint64_t DataLoader::batch_at(std::uint64_t batch_pos) const {
  return shuffle_ ? batch_order_[batch_pos] : batch_pos;
}

void DataLoader::load_shard(std::size_t fi) {
  if (loaded_ != fi) {
    tokens_ = read_token_shard(files_[fi], vocab_);
    loaded_ = fi;
    batch_order_.clear();
  }
  if (shuffle_)
    batch_order_ = permutation(batches_[fi], (seed_ * 1000003ull + pos_.epoch) * 7919ull + fi);
}

void DataLoader::next(int* inputs, int* targets) {
  const std::size_t fi = file_at(pos_.shard);
  if (loaded_ != fi || (shuffle_ && batch_order_.size() != batches_[fi])) load_shard(fi);
  const std::uint64_t G = std::uint64_t(ranks_) * B_ * T_;
  const std::uint64_t start = batch_at(pos_.batch) * G + std::uint64_t(rank_) * B_ * T_;
  const std::size_t n = std::size_t(B_) * T_;
  if (tokens_.wide)
    copy_rows(tokens_.u32.data() + start, n, inputs, targets);
  else
    copy_rows(tokens_.u16.data() + start, n, inputs, targets);
  if (++pos_.batch >= batches_[fi]) {
    pos_.batch = 0;
    if (++pos_.shard >= files_.size()) {
      pos_.shard = 0;
      ++pos_.epoch;
    }
    if (shuffle_) batch_order_.clear(); // next shard/epoch: new batch order
  }
}

} // namespace myelin
