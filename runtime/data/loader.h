// Data loader over llm.c token shards (uint16 or uint32 tokens). A global batch is `ranks` x B rows
// of T tokens; this process reads its own B rows (rank r takes rows r*B..r*B+B-1), so data-parallel
// ranks together see exactly what one process reading the whole global batch sees.
//
// Sequential order (no shuffle) matches llm.c's loader: batch k of a shard
// covers tokens k*G .. k*G+G (G = ranks*B*T tokens; inputs are the first G,
// targets the same shifted by one); a shard holds (tokens-1)/G batches; then
// the next shard; after the last shard the first again.
// With shuffle, each epoch permutes the shard order and the batch order inside
// each shard from (seed, epoch); the position is three integers, so a
// training-state file can restore it exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/data/shard.h"

namespace myelin {

struct LoaderPosition {
  std::uint64_t epoch = 0, shard = 0, batch = 0;
};

class DataLoader {
 public:
  // `flag` names the option the pattern came from, for error messages.
  DataLoader(const std::string& pattern, const std::string& flag, int B, int T, int rank, int ranks,
             int vocab_size, bool shuffle, std::uint64_t seed);

  // Fills this rank's B*T inputs and targets and advances by one global batch.
  void next(int* inputs, int* targets);
  void reset() { set_position({}); }
  LoaderPosition position() const { return pos_; }
  void set_position(const LoaderPosition& p);
  // Where global batch k (counted from the start, across shards and epochs)
  // lies: the position to set to read it next.
  LoaderPosition position_at(std::uint64_t k) const;
  // Global batches in one pass over all shards.
  std::uint64_t batches_per_epoch() const;
  std::size_t num_shards() const { return files_.size(); }

 private:
  void load_shard(std::size_t file_index);
  std::size_t file_at(std::uint64_t shard_pos);
  std::uint64_t batch_at(std::uint64_t batch_pos) const;

  std::vector<std::string> files_;
  std::vector<std::uint64_t> batches_; // per file
  int B_, T_, rank_, ranks_, vocab_;
  bool shuffle_;
  std::uint64_t seed_;
  LoaderPosition pos_;
  std::vector<std::size_t> shard_order_; // for pos_.epoch
  std::uint64_t shard_order_epoch_ = ~0ull;
  std::size_t loaded_ = ~std::size_t(0);   // file index held in tokens_
  TokenShard tokens_;                      // uint16 or uint32, as stored
  std::vector<std::uint64_t> batch_order_; // for (epoch, loaded_)
};

// Position of a sequential (unshuffled) loader after `k` global batches from
// the start, when its files hold `batches_per_file` batches each. Throws
// InputError if no file holds a batch.
LoaderPosition position_after(const std::vector<std::uint64_t>& batches_per_file, std::uint64_t k);

// Fisher-Yates permutation of 0..n-1 from a seed (deterministic everywhere).
std::vector<std::uint64_t> permutation(std::uint64_t n, std::uint64_t seed);

} // namespace myelin
