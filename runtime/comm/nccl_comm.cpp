#include "runtime/comm/nccl_comm.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace myelin {

void nccl_check(ncclResult_t r, const std::string& what) {
  if (r != ncclSuccess)
    throw CommError(what + ": " + ncclGetErrorString(r) + " (" + ncclGetLastError(nullptr) + ")");
}

void cuda_check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw CommError(what + ": " + cudaGetErrorString(e));
}

namespace detail {

// What a communicator and its operations in flight share: the NCCL handle and
// whether it was aborted (after which it must not be touched).
struct NcclState {
  ncclComm_t comm = nullptr;
  int device = 0;
  bool aborted = false;
  std::string reason;

  void abort(const std::string& why) noexcept {
    if (aborted) return;
    aborted = true;
    reason = why;
    if (comm != nullptr) {
      int prev = -1;
      cudaGetDevice(&prev);
      cudaSetDevice(device);
      const ncclResult_t r = ncclCommAbort(comm);
      if (r != ncclSuccess && r != ncclInProgress)
        std::fprintf(stderr, "myelin: ncclCommAbort: %s\n", ncclGetErrorString(r));
      if (prev >= 0 && prev != device) cudaSetDevice(prev);
    }
    comm = nullptr;
  }
};

} // namespace detail

namespace {

using clock_type = std::chrono::steady_clock;
using detail::NcclState;

// Makes `device` current for a scope.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cuda_check(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device)
      cuda_check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
  }
  ~DeviceGuard() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

ncclDataType_t nccl_type(CommDType t) {
  switch (t) {
  case CommDType::kF32:
    return ncclFloat32;
  case CommDType::kBF16:
    return ncclBfloat16;
  case CommDType::kF64:
    return ncclFloat64;
  case CommDType::kI32:
    return ncclInt32;
  case CommDType::kU8:
    return ncclUint8;
  }
  throw std::invalid_argument("nccl: unknown CommDType");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
  case ReduceOp::kSum:
    return ncclSum;
  case ReduceOp::kAvg:
    return ncclAvg;
  case ReduceOp::kMax:
    return ncclMax;
  case ReduceOp::kMin:
    return ncclMin;
  }
  throw std::invalid_argument("nccl: unknown ReduceOp");
}

ncclConfig_t nonblocking_config() {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  return cfg;
}

std::string nccl_error(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') s += " (" + std::string(last) + ")";
  return s;
}

// Polls a non-blocking communicator until it leaves ncclInProgress. At the
// deadline it aborts the communicator and throws CommTimeout.
void wait_ready(NcclState& st, const std::string& what, const std::string& op, int peer,
                double timeout_s) {
  const auto start = clock_type::now();
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(st.comm, &state);
    if (r != ncclSuccess)
      throw CommError(what + ": ncclCommGetAsyncError: " + nccl_error(r, st.comm));
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) {
      const std::string msg = what + ": " + nccl_error(state, st.comm);
      st.abort(msg);
      throw CommError(msg);
    }
    const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count();
    if (timeout_s > 0 && elapsed >= timeout_s) {
      const std::string msg = "comm timeout: " + what + " did not complete within " +
                              std::to_string(elapsed) + " s (NCCL communicator aborted)";
      st.abort(msg);
      throw CommTimeout(op, peer, elapsed, msg);
    }
    if (elapsed > 1e-3)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    else
      std::this_thread::yield();
  }
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

} // namespace

// ---- an operation in flight --------------------------------------------------

class NcclComm::Pending final : public CommPending {
 public:
  explicit Pending(std::shared_ptr<NcclState> st) : st_(std::move(st)) {}
  ~Pending() override {
    if (done_ != nullptr) cudaEventDestroy(done_); // released once the event has completed
  }

  bool poll() override {
    if (st_->aborted)
      throw CommError(description() + ": the NCCL communicator was aborted: " + st_->reason);
    const cudaError_t e = cudaEventQuery(done_);
    if (e == cudaSuccess) return true;
    if (e != cudaErrorNotReady) throw CommError(description() + ": " + cudaGetErrorString(e));
    if (st_->comm != nullptr) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(st_->comm, &state);
      if (r != ncclSuccess)
        throw CommError(description() + ": ncclCommGetAsyncError: " + nccl_error(r, st_->comm));
      if (state != ncclSuccess && state != ncclInProgress) {
        const std::string msg = description() + ": NCCL error: " + nccl_error(state, st_->comm);
        st_->abort(msg);
        throw CommError(msg);
      }
    }
    return false;
  }
  void on_timeout() noexcept override { st_->abort("timeout in " + description()); }
  bool needs_host_progress() const override { return false; }

  // Fails on an aborted communicator; completes an ncclInProgress call.
  void usable() const {
    if (st_->aborted || st_->comm == nullptr)
      throw CommError(description() + ": the NCCL communicator was aborted: " + st_->reason);
  }
  void enqueued(ncclResult_t r, const char* call) {
    if (r == ncclSuccess) return;
    if (r == ncclInProgress) {
      wait_ready(*st_, description() + " (" + call + ")", op, peer, timeout_s);
      return;
    }
    throw CommError(description() + ": " + call + ": " + nccl_error(r, st_->comm));
  }

  cudaEvent_t done_ = nullptr;

 private:
  std::shared_ptr<NcclState> st_;
};

// ---- creation -----------------------------------------------------------------

int NcclComm::local_rank_from_env() {
  for (const char* v :
       {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"}) {
    const char* s = std::getenv(v);
    if (s != nullptr && *s != '\0') {
      char* end = nullptr;
      const long x = std::strtol(s, &end, 10);
      if (end != s && *end == '\0' && x >= 0) return static_cast<int>(x);
    }
  }
  return -1;
}

ncclUniqueId NcclComm::make_unique_id() {
  ncclUniqueId id;
  nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  return id;
}

std::unique_ptr<NcclComm> NcclComm::create(Communicator& bootstrap, int device) {
  if (bootstrap.memory() != MemorySpace::kHost)
    throw std::invalid_argument("NcclComm::create: the bootstrap communicator " + bootstrap.name() +
                                " must take host memory");
  const int rank = bootstrap.rank(), size = bootstrap.size();
  // Host names of all ranks (always exchanged, so every rank makes the same calls).
  constexpr std::size_t kName = 64;
  std::vector<char> names(kName * static_cast<std::size_t>(size), '\0');
  {
    char mine[kName] = {};
    std::strncpy(mine, host_name().c_str(), kName - 1);
    bootstrap.all_gather(mine, names.data(), kName, CommDType::kU8);
  }
  // The id, with a flag telling the others whether rank 0 could make it.
  struct {
    std::int32_t ok;
    ncclUniqueId id;
  } msg{};
  std::string root_error;
  if (rank == 0) {
    try {
      msg.id = make_unique_id();
      msg.ok = 1;
    } catch (const CommError& e) {
      root_error = e.what();
    }
  }
  bootstrap.broadcast(&msg, sizeof msg, CommDType::kU8, 0);
  if (msg.ok != 1)
    throw CommError("NcclComm::create over " + bootstrap.name() +
                    ": rank 0 could not make an NCCL id" +
                    (root_error.empty() ? std::string() : ": " + root_error));
  if (device < 0) {
    int local = local_rank_from_env();
    if (local < 0) {
      local = 0;
      for (int r = 0; r < rank; ++r)
        if (std::strncmp(&names[r * kName], &names[rank * kName], kName) == 0) ++local;
    }
    int count = 0;
    cuda_check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (count <= 0) throw CommError("NcclComm::create: no CUDA device is visible");
    device = local % count;
  }
  std::string name = bootstrap.name();
  const auto colon = name.find(':');
  name = "nccl:" + (colon == std::string::npos ? name : name.substr(colon + 1));
  return create(msg.id, rank, size, device, bootstrap.timeout(), name);
}

std::unique_ptr<NcclComm> NcclComm::create(const ncclUniqueId& id, int rank, int size, int device,
                                           double timeout_s, std::string name) {
  const std::string what = "ncclCommInitRankConfig(" + name + ", rank " + std::to_string(rank) +
                           " of " + std::to_string(size) + ", device " + std::to_string(device) +
                           ")";
  DeviceGuard g(device);
  ncclConfig_t cfg = nonblocking_config();
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, size, id, rank, &cfg);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) ncclCommAbort(comm);
    throw CommError(what + ": " + nccl_error(r, comm));
  }
  NcclState tmp;
  tmp.comm = comm;
  tmp.device = device;
  wait_ready(tmp, what, "nccl_init", -1, timeout_s); // aborts comm on failure
  return std::unique_ptr<NcclComm>(new NcclComm(comm, device, std::move(name), timeout_s));
}

NcclComm::NcclComm(ncclComm_t comm, int device, std::string name, double timeout_s)
    : Communicator(std::move(name)), state_(std::make_shared<NcclState>()), device_(device) {
  state_->comm = comm;
  state_->device = device;
  timeout_s_ = timeout_s;
  try {
    DeviceGuard g(device_);
    nccl_check(ncclCommUserRank(comm, &rank_), "ncclCommUserRank");
    nccl_check(ncclCommCount(comm, &size_), "ncclCommCount");
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
               "cudaStreamCreateWithFlags");
    cuda_check(cudaEventCreateWithFlags(&input_ready_, cudaEventDisableTiming),
               "cudaEventCreateWithFlags");
    cuda_check(cudaMalloc(reinterpret_cast<void**>(&scratch_), sizeof(int)), "cudaMalloc");
  } catch (...) {
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (input_ready_ != nullptr) cudaEventDestroy(input_ready_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    state_->abort("construction failed");
    throw;
  }
}

NcclComm::~NcclComm() {
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  if (!state_->aborted && state_->comm != nullptr) {
    // Flush outstanding work, bounded by the timeout; abort if that fails.
    try {
      const ncclResult_t r = ncclCommFinalize(state_->comm);
      if (r == ncclInProgress)
        wait_ready(*state_, "ncclCommFinalize(" + name() + ")", "finalize", -1, timeout_s_);
      else
        nccl_check(r, "ncclCommFinalize(" + name() + ")");
      const ncclResult_t d = ncclCommDestroy(state_->comm);
      if (d != ncclSuccess && d != ncclInProgress)
        std::fprintf(stderr, "myelin: ncclCommDestroy(%s): %s\n", name().c_str(),
                     ncclGetErrorString(d));
      state_->comm = nullptr;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "myelin: %s\n", e.what());
      state_->abort(e.what());
    }
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (input_ready_ != nullptr) cudaEventDestroy(input_ready_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  if (prev >= 0 && prev != device_) cudaSetDevice(prev);
}

ncclComm_t NcclComm::native() const { return state_->comm; }
bool NcclComm::aborted() const { return state_->aborted; }

// ---- operations ---------------------------------------------------------------

template <typename Issue> CommHandle NcclComm::launch(std::unique_ptr<Pending> p, Issue&& issue) {
  p->usable();
  DeviceGuard g(device_);
  cuda_check(cudaEventCreateWithFlags(&p->done_, cudaEventDisableTiming),
             p->description() + ": cudaEventCreateWithFlags");
  cuda_check(cudaEventRecord(input_ready_, input_stream_), p->description() + ": cudaEventRecord");
  cuda_check(cudaStreamWaitEvent(stream_, input_ready_, 0),
             p->description() + ": cudaStreamWaitEvent");
  issue(*p);
  cuda_check(cudaEventRecord(p->done_, stream_), p->description() + ": cudaEventRecord");
  return CommHandle(std::move(p));
}

CommHandle NcclComm::all_reduce_async(const void* send, void* recv, std::size_t count,
                                      CommDType type, ReduceOp op) {
  auto p = std::make_unique<Pending>(state_);
  describe(*p, "all_reduce", count, type, reduce_op_name(op), collective_peer());
  return launch(std::move(p), [&](Pending& q) {
    q.enqueued(
        ncclAllReduce(send, recv, count, nccl_type(type), nccl_op(op), state_->comm, stream_),
        "ncclAllReduce");
  });
}

CommHandle NcclComm::reduce_scatter_async(const void* send, void* recv, std::size_t recv_count,
                                          CommDType type, ReduceOp op) {
  auto p = std::make_unique<Pending>(state_);
  describe(*p, "reduce_scatter", recv_count, type, reduce_op_name(op), collective_peer());
  return launch(std::move(p), [&](Pending& q) {
    q.enqueued(ncclReduceScatter(send, recv, recv_count, nccl_type(type), nccl_op(op), state_->comm,
                                 stream_),
               "ncclReduceScatter");
  });
}

CommHandle NcclComm::all_gather_async(const void* send, void* recv, std::size_t send_count,
                                      CommDType type) {
  auto p = std::make_unique<Pending>(state_);
  describe(*p, "all_gather", send_count, type, {}, collective_peer());
  return launch(std::move(p), [&](Pending& q) {
    q.enqueued(ncclAllGather(send, recv, send_count, nccl_type(type), state_->comm, stream_),
               "ncclAllGather");
  });
}

CommHandle NcclComm::broadcast_async(void* buf, std::size_t count, CommDType type, int root) {
  check_rank("broadcast", "root", root);
  auto p = std::make_unique<Pending>(state_);
  describe(*p, "broadcast", count, type, "root " + std::to_string(root),
           rank_ == root ? collective_peer() : (size_ == 2 ? root : -1));
  return launch(std::move(p), [&](Pending& q) {
    q.enqueued(ncclBroadcast(buf, buf, count, nccl_type(type), root, state_->comm, stream_),
               "ncclBroadcast");
  });
}

namespace {
// ncclGroupStart / ncclGroupEnd around point-to-point calls; the end is
// reached even when a call inside fails.
template <typename F> ncclResult_t grouped(F&& f) {
  ncclResult_t r = ncclGroupStart();
  if (r != ncclSuccess) return r;
  const ncclResult_t inner = f();
  const ncclResult_t end = ncclGroupEnd();
  return inner != ncclSuccess ? inner : end;
}
} // namespace

CommHandle NcclComm::send_async(const void* buf, std::size_t count, CommDType type, int peer,
                                int tag) {
  check_rank("send", "peer", peer);
  check_tag("send", tag);
  refuse_self("send", peer);
  auto p = std::make_unique<Pending>(state_);
  describe(*p, "send", count, type, "to " + std::to_string(peer), peer);
  return launch(std::move(p), [&](Pending& q) {
    q.enqueued(
        grouped([&] { return ncclSend(buf, count, nccl_type(type), peer, state_->comm, stream_); }),
        "ncclSend");
  });
}

CommHandle NcclComm::recv_async(void* buf, std::size_t count, CommDType type, int peer, int tag) {
  check_rank("recv", "peer", peer);
  check_tag("recv", tag);
  refuse_self("recv", peer);
  auto p = std::make_unique<Pending>(state_);
  describe(*p, "recv", count, type, "from " + std::to_string(peer), peer);
  return launch(std::move(p), [&](Pending& q) {
    q.enqueued(
        grouped([&] { return ncclRecv(buf, count, nccl_type(type), peer, state_->comm, stream_); }),
        "ncclRecv");
  });
}

CommHandle NcclComm::sendrecv_async(const void* send, std::size_t send_count, int dst, void* recv,
                                    std::size_t recv_count, int src, CommDType type, int tag) {
  check_rank("sendrecv", "dst", dst);
  check_rank("sendrecv", "src", src);
  check_tag("sendrecv", tag);
  auto p = std::make_unique<Pending>(state_);
  describe(*p, "sendrecv", recv_count, type,
           "to " + std::to_string(dst) + ", from " + std::to_string(src), src);
  const ncclDataType_t t = nccl_type(type);
  return launch(std::move(p), [&](Pending& q) {
    q.enqueued(grouped([&] {
                 ncclResult_t r = ncclSend(send, send_count, t, dst, state_->comm, stream_);
                 if (r != ncclSuccess) return r;
                 return ncclRecv(recv, recv_count, t, src, state_->comm, stream_);
               }),
               "ncclSend/ncclRecv");
  });
}

CommHandle NcclComm::barrier_async() {
  auto p = std::make_unique<Pending>(state_);
  describe(*p, "barrier", 0, CommDType::kU8, {}, collective_peer());
  return launch(std::move(p), [&](Pending& q) {
    q.enqueued(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, state_->comm, stream_),
               "ncclAllReduce(barrier)");
  });
}

std::unique_ptr<Communicator> NcclComm::split(int color, int key) {
  const std::string what = "ncclCommSplit(" + name() + ", color " + std::to_string(color) +
                           ", key " + std::to_string(key) + ")";
  if (state_->aborted || state_->comm == nullptr)
    throw CommError(what + ": the NCCL communicator was aborted: " + state_->reason);
  DeviceGuard g(device_);
  ncclConfig_t cfg = nonblocking_config();
  ncclComm_t nc = nullptr;
  const ncclResult_t r =
      ncclCommSplit(state_->comm, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &nc, &cfg);
  if (r != ncclSuccess && r != ncclInProgress)
    throw CommError(what + ": " + nccl_error(r, state_->comm));
  wait_ready(*state_, what, "split", -1, timeout_s_);
  if (nc == nullptr) return nullptr;
  NcclState child;
  child.comm = nc;
  child.device = device_;
  wait_ready(child, what, "split", -1, timeout_s_);
  std::unique_ptr<NcclComm> sub(
      new NcclComm(nc, device_, name() + "/split(" + std::to_string(color) + ")", timeout_s_));
  sub->input_stream_ = input_stream_;
  return sub;
}

void NcclComm::refuse_self(const char* op, int peer) const {
  if (peer == rank_)
    throw std::invalid_argument(std::string(op) + " on " + name() + ": peer " +
                                std::to_string(peer) +
                                " is this rank; NCCL pairs a transfer to self only with its "
                                "counterpart in one call: use sendrecv");
}

// ---- device buffers -----------------------------------------------------------

void* NcclComm::alloc_buffer(std::size_t bytes) {
  DeviceGuard g(device_);
  void* p = nullptr;
  cuda_check(cudaMalloc(&p, bytes == 0 ? 1 : bytes),
             "cudaMalloc(" + std::to_string(bytes) + " bytes) for " + name());
  return p;
}

void NcclComm::free_buffer(void* p) noexcept {
  if (p == nullptr) return;
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  const cudaError_t e = cudaFree(p);
  if (e != cudaSuccess) std::fprintf(stderr, "myelin: cudaFree: %s\n", cudaGetErrorString(e));
  if (prev >= 0 && prev != device_) cudaSetDevice(prev);
}

void NcclComm::copy_from_host(void* dst, const void* host_src, std::size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard g(device_);
  cuda_check(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
}

void NcclComm::copy_to_host(void* host_dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard g(device_);
  cuda_check(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
}

} // namespace myelin
