#include "runtime/comm/agree.h"

#include <cstdint>
#include <limits>

#include "runtime/util/error.h"

namespace myelin {

void agree_on_input_error(Communicator& comm, const std::string& error) {
  constexpr std::int32_t kNone = std::numeric_limits<std::int32_t>::max();
  std::int32_t root = error.empty() ? kNone : comm.rank();
  if (comm.size() > 1) comm.all_reduce(&root, 1, CommDType::kI32, ReduceOp::kMin);
  if (root == kNone) return;
  std::string message = comm.rank() == root ? error : std::string();
  std::int32_t length = std::int32_t(message.size());
  if (comm.size() > 1) {
    comm.broadcast(&length, 1, CommDType::kI32, root);
    message.resize(std::size_t(length));
    comm.broadcast(message.data(), message.size(), CommDType::kU8, root);
  }
  throw InputError(message);
}

} // namespace myelin
