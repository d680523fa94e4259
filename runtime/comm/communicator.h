// Communicator: the one interface every collective and point-to-point transfer
// of the runtime goes through. MpiComm (runtime/comm/mpi_comm.h) moves host
// memory with MPI; NcclComm (runtime/comm/nccl_comm.h) moves device memory with
// NCCL; SelfComm (runtime/comm/self_comm.h) is the one-rank communicator of a
// run without MPI. memory() says which kind of pointer a communicator takes.
//
// Buffers are untyped pointers plus an element count and a CommDType. Every
// operation has a non-blocking form (..._async) that returns a CommHandle and a
// blocking form that is exactly `..._async(...).wait()`, so blocking calls obey
// the timeout too.
//
// Timeouts: a communicator has a timeout (set_timeout, default
// kDefaultCommTimeoutSeconds; <= 0 means wait forever). A wait that passes it
// throws CommTimeout, naming the operation, the communicator, this rank and,
// when known, the peer that did not answer. So when a rank dies or hangs, the
// others stop within bounded time with a message instead of hanging. After a
// timeout the process should report and exit: buffers of the timed-out
// operation may still be written if the late peer shows up, and an NCCL
// communicator is aborted (every later call throws CommError).
//
// Collective calls must be made in the same order on every rank of a
// communicator. A communicator and its handles are used from one thread (the
// one that created the MPI runtime: MPI_THREAD_FUNNELED).
#pragma once

#include "runtime/util/bf16.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace myelin {

// Element types. kF32 and kBF16 have the values of the engine's DType, so a
// static_cast converts between them.
enum class CommDType : std::uint8_t { kF32 = 0, kBF16 = 1, kF64 = 2, kI32 = 3, kU8 = 4 };
std::size_t comm_dtype_size(CommDType t);
const char* comm_dtype_name(CommDType t); // "float32", "bfloat16", "float64", "int32", "uint8"
// Accepts the names above and f32, bf16, f64, i32, u8; throws InputError otherwise.
CommDType parse_comm_dtype(const std::string& name);

// Reductions. kAvg is the sum divided by size(); on integer types the division
// truncates (as ncclAvg does). bfloat16 reductions accumulate in float and
// round to bfloat16 at each step.
enum class ReduceOp : std::uint8_t { kSum = 0, kAvg = 1, kMax = 2, kMin = 3 };
const char* reduce_op_name(ReduceOp op); // "sum", "avg", "max", "min"
ReduceOp parse_reduce_op(const std::string& name);

// Where a communicator's buffers live.
enum class MemorySpace : std::uint8_t { kHost = 0, kDevice = 1 };
const char* memory_space_name(MemorySpace m); // "host", "device"

constexpr double kDefaultCommTimeoutSeconds = 600.0;

// Any failure of a transfer: an MPI or NCCL error code (with its error string),
// a size mismatch on recv, use of an aborted communicator.
class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A wait passed its deadline. op() is the operation ("all_reduce", "recv",
// ...), peer() the rank in the communicator that did not answer, -1 if
// unknown (a collective of more than two ranks does not tell which rank is
// missing).
class CommTimeout : public CommError {
 public:
  CommTimeout(std::string op, int peer, double seconds, const std::string& message)
      : CommError(message), op_(std::move(op)), peer_(peer), seconds_(seconds) {}
  const std::string& op() const { return op_; }
  int peer() const { return peer_; }
  double seconds() const { return seconds_; }

 private:
  std::string op_;
  int peer_;
  double seconds_;
};

// An operation in flight, as an implementation sees it. Users hold CommHandle.
class CommPending {
 public:
  virtual ~CommPending() = default;
  // Advances the operation without blocking; true once it and its finishing
  // step (e.g. the division of an average) are complete. Throws CommError.
  virtual bool poll() = 0;
  // The deadline passed. Called once, just before CommTimeout is thrown
  // (NCCL aborts the communicator here).
  virtual void on_timeout() noexcept {}
  // The handle is destroyed while the operation is still running (after a
  // timeout or during exception unwinding). Must not block.
  virtual void abandon() noexcept {}
  // True if the operation only progresses while the host polls (MPI), so a
  // wait must poll continuously; false if it progresses on its own (NCCL), so
  // a wait may sleep between polls.
  virtual bool needs_host_progress() const { return true; }

  // What the operation is, for error messages (description() joins them).
  const char* op = "";   // "all_reduce"
  std::size_t count = 0; // elements
  CommDType type = CommDType::kU8;
  std::string detail;                       // "sum", "root 0", "peer 1, tag 3"
  std::shared_ptr<const std::string> where; // "mpi:world rank 0 of 2"
  int peer = -1;                            // the peer rank if a single one is known
  double timeout_s = 0; // the communicator's timeout when the operation was issued
  // "all_reduce(float32 x 1000, sum) on mpi:world rank 0 of 2"
  std::string description() const;
};

// The result of an ..._async call. Move-only. The buffers of the operation must
// stay valid and untouched until it is complete (wait() returned, or test()
// returned true).
class CommHandle {
 public:
  CommHandle() = default; // an already complete operation
  explicit CommHandle(std::unique_ptr<CommPending> p) : pending_(std::move(p)) {}
  CommHandle(CommHandle&&) noexcept = default;
  CommHandle& operator=(CommHandle&& other) noexcept;
  CommHandle(const CommHandle&) = delete;
  CommHandle& operator=(const CommHandle&) = delete;
  // Waits for an incomplete operation (bounded by its timeout) and prints, not
  // throws, any error. Does not wait when destroyed by exception unwinding or
  // after the operation timed out: it abandons the operation instead.
  ~CommHandle();

  // One non-blocking progress step; true when complete. Call it now and then
  // during computation that overlaps an MPI operation: MPI progresses only
  // inside MPI calls.
  bool test();
  // Waits up to the timeout the communicator had when the operation was
  // issued. Throws CommTimeout when it passes (the handle stays incomplete: a
  // further wait tries again), CommError on failure.
  void wait();
  // Same with an explicit timeout in seconds; <= 0 waits forever.
  void wait_for(double seconds);
  bool done() const { return pending_ == nullptr; }

 private:
  void release() noexcept;
  std::unique_ptr<CommPending> pending_;
  bool timed_out_ = false;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A readable name for messages: "mpi:world", "mpi:world/split(1)", "nccl:dp".
  const std::string& name() const { return name_; }
  void set_name(std::string name) {
    name_ = std::move(name);
    where_.reset();
  }
  virtual MemorySpace memory() const = 0;
  // Device communicators: every operation issued from now on first waits, on
  // the GPU, for the work queued so far on `stream` (a cudaStream_t, e.g. the
  // engine's; nullptr = the legacy default stream). Host communicators ignore
  // it. Communicators made by split() start with their parent's stream.
  virtual void set_input_stream(void* /*stream*/) {}

  // Timeout of waits on this communicator, in seconds; <= 0: wait forever.
  // Operations capture the value when issued. Communicators made by split()
  // start with their parent's timeout.
  void set_timeout(double seconds) { timeout_s_ = seconds; }
  double timeout() const { return timeout_s_; }

  // ---- non-blocking operations ---------------------------------------------
  // recv[i] = op over ranks of send[i], i < count. send == recv is in place.
  virtual CommHandle all_reduce_async(const void* send, void* recv, std::size_t count,
                                      CommDType type, ReduceOp op) = 0;
  // send holds size() * recv_count elements; rank r receives the reduction of
  // chunk r. In place when recv == send + rank() * recv_count elements (the
  // other chunks of send are then left undefined).
  virtual CommHandle reduce_scatter_async(const void* send, void* recv, std::size_t recv_count,
                                          CommDType type, ReduceOp op) = 0;
  // recv (size() * send_count elements) gets every rank's send, in rank
  // order. In place when send == recv + rank() * send_count elements.
  virtual CommHandle all_gather_async(const void* send, void* recv, std::size_t send_count,
                                      CommDType type) = 0;
  // buf of `root` is copied to buf of every other rank.
  virtual CommHandle broadcast_async(void* buf, std::size_t count, CommDType type, int root) = 0;
  // Point-to-point. Messages between two ranks arrive in the order sent; MPI
  // matches them by tag (0 .. 32767), NCCL ignores the tag (order only). The
  // receiver's count must equal the sender's.
  virtual CommHandle send_async(const void* buf, std::size_t count, CommDType type, int peer,
                                int tag = 0) = 0;
  virtual CommHandle recv_async(void* buf, std::size_t count, CommDType type, int peer,
                                int tag = 0) = 0;
  // Sends to `dst` and receives from `src` at the same time (a ring shift or a
  // pipeline exchange without deadlock).
  virtual CommHandle sendrecv_async(const void* send, std::size_t send_count, int dst, void* recv,
                                    std::size_t recv_count, int src, CommDType type,
                                    int tag = 0) = 0;
  virtual CommHandle barrier_async() = 0;

  // ---- blocking operations: ..._async(...).wait() --------------------------
  void all_reduce(const void* send, void* recv, std::size_t count, CommDType type, ReduceOp op) {
    all_reduce_async(send, recv, count, type, op).wait();
  }
  void all_reduce(void* buf, std::size_t count, CommDType type, ReduceOp op) {
    all_reduce_async(buf, buf, count, type, op).wait();
  }
  void reduce_scatter(const void* send, void* recv, std::size_t recv_count, CommDType type,
                      ReduceOp op) {
    reduce_scatter_async(send, recv, recv_count, type, op).wait();
  }
  void all_gather(const void* send, void* recv, std::size_t send_count, CommDType type) {
    all_gather_async(send, recv, send_count, type).wait();
  }
  void broadcast(void* buf, std::size_t count, CommDType type, int root) {
    broadcast_async(buf, count, type, root).wait();
  }
  void send(const void* buf, std::size_t count, CommDType type, int peer, int tag = 0) {
    send_async(buf, count, type, peer, tag).wait();
  }
  void recv(void* buf, std::size_t count, CommDType type, int peer, int tag = 0) {
    recv_async(buf, count, type, peer, tag).wait();
  }
  void sendrecv(const void* send, std::size_t send_count, int dst, void* recv,
                std::size_t recv_count, int src, CommDType type, int tag = 0) {
    sendrecv_async(send, send_count, dst, recv, recv_count, src, type, tag).wait();
  }
  void barrier() { barrier_async().wait(); }

  // Collective over this communicator: ranks with the same color form a new
  // communicator, ordered by key then by rank here. color < 0 takes no part
  // and gets nullptr. Honours the timeout.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // ---- buffers in this communicator's memory space --------------------------
  // Host: 64-byte aligned host memory. Device: cudaMalloc on the
  // communicator's device. Copies are synchronous.
  virtual void* alloc_buffer(std::size_t bytes);
  virtual void free_buffer(void* p) noexcept;
  virtual void copy_from_host(void* dst, const void* host_src, std::size_t bytes);
  virtual void copy_to_host(void* host_dst, const void* src, std::size_t bytes);

 protected:
  explicit Communicator(std::string name) : name_(std::move(name)) {}
  // Fills the descriptive fields of p (and its timeout from this communicator).
  void describe(CommPending& p, const char* op, std::size_t count, CommDType type,
                std::string detail = {}, int peer = -1) const;
  // "all_reduce(float32 x 1000, sum) on mpi:world rank 0 of 2"
  std::string describe_op(const char* op, std::size_t count, CommDType type,
                          const std::string& detail = {}) const;
  // For collectives: the other rank when there are exactly two, else -1.
  int collective_peer() const { return size() == 2 ? 1 - rank() : -1; }
  // Throw std::invalid_argument naming the operation when a rank is out of
  // range or a tag is negative / above kMaxTag.
  void check_rank(const char* op, const char* what, int r) const;
  void check_tag(const char* op, int tag) const;

  double timeout_s_ = kDefaultCommTimeoutSeconds;

 private:
  std::string name_;
  mutable std::shared_ptr<const std::string> where_;

 public:
  static constexpr int kMaxTag = 32767; // the smallest MPI_TAG_UB MPI allows
};

// Owns a buffer from Communicator::alloc_buffer.
class CommBuffer {
 public:
  CommBuffer() = default;
  CommBuffer(Communicator& comm, std::size_t bytes)
      : comm_(&comm), bytes_(bytes), data_(comm.alloc_buffer(bytes)) {}
  CommBuffer(CommBuffer&& o) noexcept
      : comm_(o.comm_), bytes_(o.bytes_), data_(std::exchange(o.data_, nullptr)) {}
  CommBuffer& operator=(CommBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      comm_ = o.comm_;
      bytes_ = o.bytes_;
      data_ = std::exchange(o.data_, nullptr);
    }
    return *this;
  }
  ~CommBuffer() { reset(); }
  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void reset() noexcept {
    if (data_ != nullptr) comm_->free_buffer(data_);
    data_ = nullptr;
  }
  Communicator* comm_ = nullptr;
  std::size_t bytes_ = 0;
  void* data_ = nullptr;
};

// How long a wait on an operation that progresses only while the host polls
// (MPI) keeps polling before it starts yielding the core to other processes
// between polls. Spinning gives far better bandwidth when every rank has a
// core; yielding early is better when ranks share cores. MpiRuntime sets 10
// ms, or 20 us when the node has more ranks than cores. Process-wide.
void set_comm_spin_seconds(double seconds);
double comm_spin_seconds();

// bfloat16 <-> float on the host (round to nearest even; NaN stays NaN).

} // namespace myelin
