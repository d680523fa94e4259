// SelfComm: the communicator of a single process run without MPI (size 1,
// host memory). Every operation completes at once: reductions and gathers
// copy, broadcast does nothing, a send to rank 0 is kept until the matching
// recv (same tag) takes it. Lets the trainer treat one process like any other.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "runtime/comm/communicator.h"

namespace myelin {

class SelfComm final : public Communicator {
 public:
  explicit SelfComm(std::string name = "self") : Communicator(std::move(name)) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  MemorySpace memory() const override { return MemorySpace::kHost; }

  CommHandle all_reduce_async(const void* send, void* recv, std::size_t count, CommDType type,
                              ReduceOp op) override;
  CommHandle reduce_scatter_async(const void* send, void* recv, std::size_t recv_count,
                                  CommDType type, ReduceOp op) override;
  CommHandle all_gather_async(const void* send, void* recv, std::size_t send_count,
                              CommDType type) override;
  CommHandle broadcast_async(void* buf, std::size_t count, CommDType type, int root) override;
  CommHandle send_async(const void* buf, std::size_t count, CommDType type, int peer,
                        int tag = 0) override;
  CommHandle recv_async(void* buf, std::size_t count, CommDType type, int peer,
                        int tag = 0) override;
  CommHandle sendrecv_async(const void* send, std::size_t send_count, int dst, void* recv,
                            std::size_t recv_count, int src, CommDType type, int tag = 0) override;
  CommHandle barrier_async() override { return {}; }
  std::unique_ptr<Communicator> split(int color, int key) override;

 private:
  struct Message {
    int tag;
    CommDType type;
    std::vector<unsigned char> bytes;
  };
  std::deque<Message> mailbox_;
};

} // namespace myelin
