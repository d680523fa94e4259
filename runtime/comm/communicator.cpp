// Parts of the communicator interface shared by every implementation: type
// names, the wait loop with its deadline, host buffers, argument checks.
#include "runtime/comm/communicator.h"

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <thread>

#include "runtime/util/error.h"

namespace myelin {

std::size_t comm_dtype_size(CommDType t) {
  switch (t) {
  case CommDType::kF32:
    return 4;
  case CommDType::kBF16:
    return 2;
  case CommDType::kF64:
    return 8;
  case CommDType::kI32:
    return 4;
  case CommDType::kU8:
    return 1;
  }
  throw std::invalid_argument("comm: unknown CommDType " + std::to_string(static_cast<int>(t)));
}

const char* comm_dtype_name(CommDType t) {
  switch (t) {
  case CommDType::kF32:
    return "float32";
  case CommDType::kBF16:
    return "bfloat16";
  case CommDType::kF64:
    return "float64";
  case CommDType::kI32:
    return "int32";
  case CommDType::kU8:
    return "uint8";
  }
  return "unknown";
}

CommDType parse_comm_dtype(const std::string& s) {
  if (s == "float32" || s == "f32" || s == "fp32" || s == "float") return CommDType::kF32;
  if (s == "bfloat16" || s == "bf16") return CommDType::kBF16;
  if (s == "float64" || s == "f64" || s == "fp64" || s == "double") return CommDType::kF64;
  if (s == "int32" || s == "i32" || s == "int") return CommDType::kI32;
  if (s == "uint8" || s == "u8" || s == "byte") return CommDType::kU8;
  throw InputError("data type '" + s + "': expected float32, bfloat16, float64, int32 or uint8");
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
  case ReduceOp::kSum:
    return "sum";
  case ReduceOp::kAvg:
    return "avg";
  case ReduceOp::kMax:
    return "max";
  case ReduceOp::kMin:
    return "min";
  }
  return "unknown";
}

ReduceOp parse_reduce_op(const std::string& s) {
  if (s == "sum") return ReduceOp::kSum;
  if (s == "avg" || s == "mean") return ReduceOp::kAvg;
  if (s == "max") return ReduceOp::kMax;
  if (s == "min") return ReduceOp::kMin;
  throw InputError("reduction '" + s + "': expected sum, avg, max or min");
}

const char* memory_space_name(MemorySpace m) { return m == MemorySpace::kHost ? "host" : "device"; }

namespace {
std::atomic<double> g_spin_seconds{20e-6};
}

void set_comm_spin_seconds(double seconds) { g_spin_seconds.store(seconds < 0 ? 0 : seconds); }
double comm_spin_seconds() { return g_spin_seconds.load(); }

// ---- CommHandle ---------------------------------------------------------------

CommHandle& CommHandle::operator=(CommHandle&& other) noexcept {
  if (this != &other) {
    release();
    pending_ = std::move(other.pending_);
    timed_out_ = other.timed_out_;
    other.timed_out_ = false;
  }
  return *this;
}

CommHandle::~CommHandle() { release(); }

void CommHandle::release() noexcept {
  if (!pending_) return;
  if (timed_out_ || std::uncaught_exceptions() > 0) {
    pending_->abandon();
    pending_.reset();
    return;
  }
  try {
    wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "myelin comm: error in an operation whose handle was dropped: %s\n",
                 e.what());
  }
  if (pending_) {
    pending_->abandon();
    pending_.reset();
  }
}

bool CommHandle::test() {
  if (!pending_) return true;
  if (pending_->poll()) {
    pending_.reset();
    timed_out_ = false;
    return true;
  }
  return false;
}

void CommHandle::wait() {
  if (pending_) wait_for(pending_->timeout_s);
}

void CommHandle::wait_for(double seconds) {
  if (!pending_) return;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const bool host_progress = pending_->needs_host_progress();
  const double spin = comm_spin_seconds();
  for (;;) {
    if (pending_->poll()) {
      pending_.reset();
      timed_out_ = false;
      return;
    }
    const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
    if (seconds > 0 && elapsed >= seconds) {
      if (!timed_out_) pending_->on_timeout();
      timed_out_ = true;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f", elapsed);
      std::string msg =
          "comm timeout: " + pending_->description() + " did not complete within " + buf + " s";
      if (pending_->peer >= 0)
        msg += "; waiting for rank " + std::to_string(pending_->peer);
      else
        msg += "; some rank did not take part";
      msg += " (a peer died, hangs, or issued a different operation)";
      throw CommTimeout(pending_->op, pending_->peer, elapsed, msg);
    }
    // MPI progresses only inside MPI calls, so keep polling (yielding the core
    // to other ranks when oversubscribed). NCCL runs on its own: back off.
    if (host_progress) {
      if (elapsed > spin) std::this_thread::yield();
    } else if (elapsed > 5e-3) {
      std::this_thread::sleep_for(std::chrono::microseconds(elapsed > 0.1 ? 1000 : 100));
    } else if (elapsed > 50e-6) {
      std::this_thread::yield();
    }
  }
}

// ---- Communicator -------------------------------------------------------------

namespace {
constexpr std::align_val_t kHostAlign{64};
}

void* Communicator::alloc_buffer(std::size_t bytes) {
  return ::operator new(bytes == 0 ? 1 : bytes, kHostAlign);
}

void Communicator::free_buffer(void* p) noexcept {
  if (p != nullptr) ::operator delete(p, kHostAlign);
}

void Communicator::copy_from_host(void* dst, const void* host_src, std::size_t bytes) {
  if (bytes > 0) std::memcpy(dst, host_src, bytes);
}

void Communicator::copy_to_host(void* host_dst, const void* src, std::size_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, src, bytes);
}

std::string CommPending::description() const {
  std::string s = op;
  s += "(";
  s += comm_dtype_name(type);
  s += " x " + std::to_string(count);
  if (!detail.empty()) s += ", " + detail;
  s += ")";
  if (where) s += " on " + *where;
  return s;
}

void Communicator::describe(CommPending& p, const char* op, std::size_t count, CommDType type,
                            std::string detail, int peer) const {
  if (!where_)
    where_ = std::make_shared<const std::string>(name_ + " rank " + std::to_string(rank()) +
                                                 " of " + std::to_string(size()));
  p.op = op;
  p.count = count;
  p.type = type;
  p.detail = std::move(detail);
  p.where = where_;
  p.peer = peer;
  p.timeout_s = timeout_s_;
}

std::string Communicator::describe_op(const char* op, std::size_t count, CommDType type,
                                      const std::string& detail) const {
  struct Tmp : CommPending {
    bool poll() override { return true; }
  } t;
  describe(t, op, count, type, detail);
  return t.description();
}

void Communicator::check_rank(const char* op, const char* what, int r) const {
  if (r < 0 || r >= size())
    throw std::invalid_argument(std::string(op) + " on " + name() + ": " + what + " " +
                                std::to_string(r) + " is not a rank of this communicator (0.." +
                                std::to_string(size() - 1) + ")");
}

void Communicator::check_tag(const char* op, int tag) const {
  if (tag < 0 || tag > kMaxTag)
    throw std::invalid_argument(std::string(op) + " on " + name() + ": tag " + std::to_string(tag) +
                                " is outside 0.." + std::to_string(kMaxTag));
}

} // namespace myelin
