// Mesh: the data-parallel x pipeline-parallel layout of a job's ranks.
//
// world rank r = replica * pp + stage, i.e. stage = r % pp, replica = r / pp.
// The pp ranks of one pipeline (one data-parallel replica) are contiguous, so
// with mpirun's default by-slot placement a pipeline stays within a node and
// its activation traffic stays on the fast links; the data-parallel groups
// (one per stage) span replicas. Example, dp = 2, pp = 3:
//
//   world rank   0 1 2 | 3 4 5
//   replica      0 0 0 | 1 1 1     (dp_rank)
//   stage        0 1 2 | 0 1 2     (pp_rank)
//
// dp(): the ranks with this rank's stage, ordered by replica (dp_rank = its
// rank there); the gradient all-reduce / ZeRO group. pp(): the ranks of this
// rank's replica, ordered by stage (pp_rank = its rank there); activations
// go to next_stage() and gradients to prev_stage(), both ranks in pp().
#pragma once

#include <memory>
#include <string>

#include "runtime/comm/communicator.h"

namespace myelin {

class Mesh {
 public:
  // Collective over `world` (splits it twice). Throws InputError naming --dp
  // and --pp unless dp >= 1, pp >= 1 and dp * pp == world->size(); every rank
  // throws the same, so no rank is left waiting.
  Mesh(std::unique_ptr<Communicator> world, int dp, int pp);

  static void validate(int dp, int pp, int world_size);
  static int stage_of(int world_rank, int pp) { return world_rank % pp; }
  static int replica_of(int world_rank, int pp) { return world_rank / pp; }
  static int world_rank_of(int replica, int stage, int pp) { return replica * pp + stage; }

  Communicator& world() const { return *world_; }
  Communicator& dp() const { return *dp_; }
  Communicator& pp() const { return *pp_; }

  int world_rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  int dp_rank() const { return dp_rank_; } // replica index
  int dp_size() const { return dp_size_; }
  int pp_rank() const { return pp_rank_; } // stage index
  int pp_size() const { return pp_size_; }
  bool first_stage() const { return pp_rank_ == 0; }
  bool last_stage() const { return pp_rank_ == pp_size_ - 1; }
  // Ranks in pp() of the neighbouring stages; -1 at the ends of the pipeline.
  int prev_stage() const { return first_stage() ? -1 : pp_rank_ - 1; }
  int next_stage() const { return last_stage() ? -1 : pp_rank_ + 1; }

  // "rank 4 of 6: replica 1 of 2, stage 1 of 3"
  std::string describe() const;
  // Communicator::set_input_stream on world(), dp() and pp().
  void set_input_stream(void* stream);

 private:
  std::unique_ptr<Communicator> world_;
  std::unique_ptr<Communicator> dp_;
  std::unique_ptr<Communicator> pp_;
  int dp_rank_ = 0, dp_size_ = 1, pp_rank_ = 0, pp_size_ = 1;
};

} // namespace myelin
