#include "runtime/comm/mesh.h"

#include "runtime/util/error.h"

namespace myelin {

void Mesh::validate(int dp, int pp, int world_size) {
  if (dp < 1 || pp < 1)
    throw InputError("--dp " + std::to_string(dp) + " --pp " + std::to_string(pp) +
                     ": both must be at least 1");
  if (static_cast<long long>(dp) * pp != world_size)
    throw InputError("--dp " + std::to_string(dp) + " x --pp " + std::to_string(pp) + " = " +
                     std::to_string(static_cast<long long>(dp) * pp) + " ranks, but the job has " +
                     std::to_string(world_size) + " (mpirun -np " + std::to_string(world_size) +
                     "); choose --dp and --pp with dp * pp = " + std::to_string(world_size));
}

Mesh::Mesh(std::unique_ptr<Communicator> world, int dp, int pp) : world_(std::move(world)) {
  if (!world_) throw std::invalid_argument("Mesh: no world communicator");
  validate(dp, pp, world_->size());
  const int r = world_->rank();
  const int stage = stage_of(r, pp);
  const int replica = replica_of(r, pp);
  dp_ = world_->split(stage, replica);
  pp_ = world_->split(replica, stage);
  dp_->set_name(world_->name() + "/dp" + std::to_string(stage));
  pp_->set_name(world_->name() + "/pp" + std::to_string(replica));
  dp_rank_ = dp_->rank();
  dp_size_ = dp_->size();
  pp_rank_ = pp_->rank();
  pp_size_ = pp_->size();
  if (dp_rank_ != replica || pp_rank_ != stage || dp_size_ != dp || pp_size_ != pp)
    throw CommError("Mesh: split of " + world_->name() + " gave dp " + std::to_string(dp_rank_) +
                    "/" + std::to_string(dp_size_) + ", pp " + std::to_string(pp_rank_) + "/" +
                    std::to_string(pp_size_) + " on world rank " + std::to_string(r));
}

void Mesh::set_input_stream(void* stream) {
  world_->set_input_stream(stream);
  dp_->set_input_stream(stream);
  pp_->set_input_stream(stream);
}

std::string Mesh::describe() const {
  return "rank " + std::to_string(world_rank()) + " of " + std::to_string(world_size()) +
         ": replica " + std::to_string(dp_rank_) + " of " + std::to_string(dp_size_) + ", stage " +
         std::to_string(pp_rank_) + " of " + std::to_string(pp_size_);
}

} // namespace myelin
