#include "runtime/comm/self_comm.h"

#include <cstring>

namespace myelin {

namespace {
void copy_elems(void* dst, const void* src, std::size_t count, CommDType type) {
  if (dst != src && count > 0) std::memmove(dst, src, count * comm_dtype_size(type));
}
} // namespace

CommHandle SelfComm::all_reduce_async(const void* send, void* recv, std::size_t count,
                                      CommDType type, ReduceOp) {
  copy_elems(recv, send, count, type); // the sum, avg, max and min of one value
  return {};
}

CommHandle SelfComm::reduce_scatter_async(const void* send, void* recv, std::size_t recv_count,
                                          CommDType type, ReduceOp) {
  copy_elems(recv, send, recv_count, type);
  return {};
}

CommHandle SelfComm::all_gather_async(const void* send, void* recv, std::size_t send_count,
                                      CommDType type) {
  copy_elems(recv, send, send_count, type);
  return {};
}

CommHandle SelfComm::broadcast_async(void*, std::size_t, CommDType, int root) {
  check_rank("broadcast", "root", root);
  return {};
}

CommHandle SelfComm::send_async(const void* buf, std::size_t count, CommDType type, int peer,
                                int tag) {
  check_rank("send", "peer", peer);
  check_tag("send", tag);
  const auto* p = static_cast<const unsigned char*>(buf);
  mailbox_.push_back({tag, type, std::vector<unsigned char>(p, p + count * comm_dtype_size(type))});
  return {};
}

CommHandle SelfComm::recv_async(void* buf, std::size_t count, CommDType type, int peer, int tag) {
  check_rank("recv", "peer", peer);
  check_tag("recv", tag);
  for (auto it = mailbox_.begin(); it != mailbox_.end(); ++it) {
    if (it->tag != tag) continue;
    const std::size_t bytes = count * comm_dtype_size(type);
    if (it->type != type || it->bytes.size() != bytes)
      throw CommError(describe_op("recv", count, type) + ": the message with tag " +
                      std::to_string(tag) + " holds " + std::to_string(it->bytes.size()) +
                      " bytes of " + comm_dtype_name(it->type) + ", expected " +
                      std::to_string(bytes));
    if (bytes > 0) std::memcpy(buf, it->bytes.data(), bytes);
    mailbox_.erase(it);
    return {};
  }
  throw CommError(describe_op("recv", count, type) + ": no message with tag " +
                  std::to_string(tag) + " was sent (a one-rank communicator cannot wait)");
}

CommHandle SelfComm::sendrecv_async(const void* send, std::size_t send_count, int dst, void* recv,
                                    std::size_t recv_count, int src, CommDType type, int tag) {
  check_rank("sendrecv", "dst", dst);
  check_rank("sendrecv", "src", src);
  check_tag("sendrecv", tag);
  if (send_count != recv_count)
    throw CommError(describe_op("sendrecv", recv_count, type) + ": sends " +
                    std::to_string(send_count) + " elements to itself");
  copy_elems(recv, send, recv_count, type);
  return {};
}

std::unique_ptr<Communicator> SelfComm::split(int color, int key) {
  (void)key;
  if (color < 0) return nullptr;
  auto c = std::make_unique<SelfComm>(name() + "/split(" + std::to_string(color) + ")");
  c->set_timeout(timeout());
  return c;
}

} // namespace myelin
