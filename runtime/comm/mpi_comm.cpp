#include "runtime/comm/mpi_comm.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace myelin {

std::string mpi_error_string(int rc) {
  char buf[MPI_MAX_ERROR_STRING + 1] = {};
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) std::snprintf(buf, sizeof buf, "unknown");
  int cls = rc;
  MPI_Error_class(rc, &cls);
  return std::string(buf) + " (MPI error class " + std::to_string(cls) + ")";
}

void mpi_check(int rc, const std::string& what) {
  if (rc != MPI_SUCCESS) throw CommError(what + ": " + mpi_error_string(rc));
}

namespace {

// MPI_Testall with errors as CommError naming `what`; true when all are done.
bool test_all(int n, MPI_Request* reqs, MPI_Status* statuses, const std::string& what) {
  int flag = 0;
  const int rc = MPI_Testall(n, reqs, &flag, statuses);
  if (rc == MPI_ERR_IN_STATUS) {
    for (int i = 0; i < n; ++i)
      if (statuses[i].MPI_ERROR != MPI_SUCCESS && statuses[i].MPI_ERROR != MPI_ERR_PENDING)
        throw CommError(what + ": " + mpi_error_string(statuses[i].MPI_ERROR));
  }
  if (rc != MPI_SUCCESS) throw CommError(what + ": " + mpi_error_string(rc));
  return flag != 0;
}

bool mpi_running() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

// ---- bfloat16 reductions ------------------------------------------------------

template <typename F> void bf16_apply(void* in, void* inout, const int* len, F f) {
  const auto* a = static_cast<const std::uint16_t*>(in);
  auto* b = static_cast<std::uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(f(bf16_to_float(a[i]), bf16_to_float(b[i])));
}

extern "C" void myelin_bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  bf16_apply(in, inout, len, [](float x, float y) { return x + y; });
}
extern "C" void myelin_bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  bf16_apply(in, inout, len, [](float x, float y) { return x > y ? x : y; });
}
extern "C" void myelin_bf16_min(void* in, void* inout, int* len, MPI_Datatype*) {
  bf16_apply(in, inout, len, [](float x, float y) { return x < y ? x : y; });
}

struct Bf16Ops {
  bool made = false;
  MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL, min = MPI_OP_NULL;
};
Bf16Ops g_bf16;

// Called by MPI_Finalize (attributes of MPI_COMM_SELF are deleted first).
extern "C" int myelin_free_bf16_ops(MPI_Comm, int, void*, void*) {
  if (g_bf16.made) {
    MPI_Op_free(&g_bf16.sum);
    MPI_Op_free(&g_bf16.max);
    MPI_Op_free(&g_bf16.min);
    g_bf16.made = false;
  }
  return MPI_SUCCESS;
}

const Bf16Ops& bf16_ops() {
  if (!g_bf16.made) {
    mpi_check(MPI_Op_create(&myelin_bf16_sum, 1, &g_bf16.sum), "MPI_Op_create(bfloat16 sum)");
    mpi_check(MPI_Op_create(&myelin_bf16_max, 1, &g_bf16.max), "MPI_Op_create(bfloat16 max)");
    mpi_check(MPI_Op_create(&myelin_bf16_min, 1, &g_bf16.min), "MPI_Op_create(bfloat16 min)");
    g_bf16.made = true;
    int keyval = MPI_KEYVAL_INVALID;
    mpi_check(
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, &myelin_free_bf16_ops, &keyval, nullptr),
        "MPI_Comm_create_keyval");
    mpi_check(MPI_Comm_set_attr(MPI_COMM_SELF, keyval, &g_bf16), "MPI_Comm_set_attr");
  }
  return g_bf16;
}

MPI_Datatype mpi_type(CommDType t) {
  switch (t) {
  case CommDType::kF32:
    return MPI_FLOAT;
  case CommDType::kBF16:
    return MPI_UINT16_T; // reduced with the ops above
  case CommDType::kF64:
    return MPI_DOUBLE;
  case CommDType::kI32:
    return MPI_INT32_T;
  case CommDType::kU8:
    return MPI_UINT8_T;
  }
  throw std::invalid_argument("mpi: unknown CommDType");
}

MPI_Op mpi_op(CommDType t, ReduceOp op) {
  if (t == CommDType::kBF16) {
    const Bf16Ops& b = bf16_ops();
    return op == ReduceOp::kMax ? b.max : op == ReduceOp::kMin ? b.min : b.sum;
  }
  return op == ReduceOp::kMax ? MPI_MAX : op == ReduceOp::kMin ? MPI_MIN : MPI_SUM;
}

// buf[i] /= n, in the element type (integers truncate).
void divide_by(void* buf, std::size_t count, CommDType t, int n) {
  switch (t) {
  case CommDType::kF32: {
    auto* p = static_cast<float*>(buf);
    const float d = static_cast<float>(n);
    for (std::size_t i = 0; i < count; ++i) p[i] /= d;
    break;
  }
  case CommDType::kBF16: {
    auto* p = static_cast<std::uint16_t*>(buf);
    const float d = static_cast<float>(n);
    for (std::size_t i = 0; i < count; ++i) p[i] = float_to_bf16(bf16_to_float(p[i]) / d);
    break;
  }
  case CommDType::kF64: {
    auto* p = static_cast<double*>(buf);
    for (std::size_t i = 0; i < count; ++i) p[i] /= n;
    break;
  }
  case CommDType::kI32: {
    auto* p = static_cast<std::int32_t*>(buf);
    for (std::size_t i = 0; i < count; ++i) p[i] /= n;
    break;
  }
  case CommDType::kU8: {
    auto* p = static_cast<std::uint8_t*>(buf);
    for (std::size_t i = 0; i < count; ++i) p[i] = static_cast<std::uint8_t>(p[i] / n);
    break;
  }
  }
}

// Large counts are cut into pieces MPI's int counts can hold.
constexpr std::size_t kChunk = std::size_t{1} << 30;
constexpr int kSplitTag = 0x3e11;

template <typename F> void for_chunks(std::size_t count, F f) {
  std::size_t off = 0;
  do {
    const std::size_t n = std::min(kChunk, count - off);
    f(off, static_cast<int>(n));
    off += n;
  } while (off < count);
}

char* at(void* p, std::size_t elems, CommDType t) {
  return static_cast<char*>(p) + elems * comm_dtype_size(t);
}
const char* at(const void* p, std::size_t elems, CommDType t) {
  return static_cast<const char*>(p) + elems * comm_dtype_size(t);
}

class MpiPending final : public CommPending {
 public:
  std::vector<MPI_Request> reqs;
  std::vector<int> expect; // per request: elements a recv must get, -1 for others
  MPI_Datatype dtype = MPI_BYTE;
  std::function<void()> finish;

  void add(MPI_Request r, int expected = -1) {
    reqs.push_back(r);
    expect.push_back(expected);
  }
  void issued(int rc, const char* call) const {
    if (rc != MPI_SUCCESS)
      throw CommError(description() + ": " + call + " failed: " + mpi_error_string(rc));
  }

  bool poll() override {
    statuses_.resize(reqs.size());
    if (!test_all(int(reqs.size()), reqs.data(), statuses_.data(), description())) return false;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      if (expect[i] < 0) continue;
      int got = 0;
      const int grc = MPI_Get_count(&statuses_[i], dtype, &got);
      if (grc != MPI_SUCCESS)
        throw CommError(description() + ": MPI_Get_count: " + mpi_error_string(grc));
      if (got != expect[i])
        throw CommError(description() + ": received " + std::to_string(got) + " elements where " +
                        std::to_string(expect[i]) + " were expected (the sender's count differs)");
    }
    if (finish) {
      auto f = std::move(finish);
      finish = nullptr;
      f();
    }
    return true;
  }

 private:
  std::vector<MPI_Status> statuses_;
};

} // namespace

// Scratch buffers kept between operations: fresh pages are expensive (each
// first touch faults, very slowly in some VMs), and large mallocs return
// fresh pages every time.
class MpiScratch {
 public:
  using Buffer = std::unique_ptr<unsigned char[]>;
  struct Item {
    Buffer data;
    std::size_t bytes = 0;
  };
  Item take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->bytes >= bytes && (best == free_.end() || it->bytes < best->bytes)) best = it;
    if (best != free_.end()) {
      Item i = std::move(*best);
      free_.erase(best);
      return i;
    }
    return {Buffer(new unsigned char[std::max<std::size_t>(1, bytes)]), bytes};
  }
  void give(Item i) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(i));
    // Keep the few largest.
    std::sort(free_.begin(), free_.end(),
              [](const Item& a, const Item& b) { return a.bytes > b.bytes; });
    if (free_.size() > kKeep) free_.resize(kKeep);
  }

 private:
  static constexpr std::size_t kKeep = 4;
  std::mutex mu_;
  std::vector<Item> free_;
};

namespace {

// dst[i] = a[i] op b[i] (kAvg sums; the division comes at the end).
template <typename T, typename Load, typename Store>
void combine_as(void* dst, const void* a, const void* b, std::size_t count, ReduceOp op, Load load,
                Store store) {
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  T* d = static_cast<T*>(dst);
  switch (op) {
  case ReduceOp::kSum:
  case ReduceOp::kAvg:
    for (std::size_t i = 0; i < count; ++i) d[i] = store(load(x[i]) + load(y[i]));
    break;
  case ReduceOp::kMax:
    for (std::size_t i = 0; i < count; ++i) d[i] = store(std::max(load(x[i]), load(y[i])));
    break;
  case ReduceOp::kMin:
    for (std::size_t i = 0; i < count; ++i) d[i] = store(std::min(load(x[i]), load(y[i])));
    break;
  }
}

void combine(void* dst, const void* a, const void* b, std::size_t count, CommDType t, ReduceOp op) {
  auto same = [](auto v) { return v; };
  switch (t) {
  case CommDType::kF32:
    combine_as<float>(dst, a, b, count, op, same, same);
    break;
  case CommDType::kF64:
    combine_as<double>(dst, a, b, count, op, same, same);
    break;
  case CommDType::kI32:
    // Sums wrap like MPI_SUM on int32 (computed unsigned, no overflow UB).
    combine_as<std::int32_t>(
        dst, a, b, count, op, [](std::int32_t v) { return static_cast<std::int64_t>(v); },
        [](std::int64_t v) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(v)); });
    break;
  case CommDType::kU8:
    combine_as<std::uint8_t>(
        dst, a, b, count, op, [](std::uint8_t v) { return static_cast<int>(v); },
        [](int v) { return static_cast<std::uint8_t>(v); });
    break;
  case CommDType::kBF16:
    combine_as<std::uint16_t>(
        dst, a, b, count, op, [](std::uint16_t v) { return bf16_to_float(v); },
        [](float v) { return float_to_bf16(v); });
    break;
  }
}

// Ring reduce-scatter over point-to-point messages (OpenMPI's
// MPI_(I)reduce_scatter_block is a reduce followed by a scatter, roughly ten
// times slower than an all-reduce of the same buffer). n - 1 steps: at step s
// rank r sends its partial sum of chunk (r - 1 - s) mod n to rank r + 1 and
// receives rank r - 1's partial of chunk (r - 2 - s) mod n, adding its own
// input to it; after the last step it holds chunk r summed over all ranks.
// Input chunk r is read only in the last step, so in place is safe.
class RingReduceScatter final : public CommPending {
 public:
  RingReduceScatter(MPI_Comm comm, int rank, int n, int tag, const void* in, void* out,
                    std::size_t chunk, CommDType t, ReduceOp op, std::shared_ptr<MpiScratch> pool)
      : comm_(comm), rank_(rank), n_(n), tag_(tag), in_(static_cast<const char*>(in)), out_(out),
        chunk_(chunk), bytes_(chunk * comm_dtype_size(t)), t_(t), op_(op), dt_(mpi_type(t)),
        pool_(std::move(pool)) {
    for (auto& b : tmp_) b = pool_->take(bytes_);
  }
  ~RingReduceScatter() override {
    if (abandoned_) { // MPI may still write into them: never reuse or free
      for (auto& b : tmp_) (void)b.data.release();
      return;
    }
    for (auto& b : tmp_) pool_->give(std::move(b));
  }
  void abandon() noexcept override {
    for (MPI_Request r : reqs_)
      if (r != MPI_REQUEST_NULL) abandoned_ = true;
  }

  void start() { post(); }

  bool poll() override {
    MPI_Status st[2];
    if (!test_all(2, reqs_, st, description())) return false;
    const char* mine = in_ + static_cast<std::size_t>(mod(rank_ - 2 - step_)) * bytes_;
    unsigned char* got = tmp_[step_ % 2].data.get();
    if (step_ == n_ - 2) {
      combine(out_, got, mine, chunk_, t_, op_);
      if (op_ == ReduceOp::kAvg) divide_by(out_, chunk_, t_, n_);
      return true;
    }
    combine(got, got, mine, chunk_, t_, op_);
    ++step_;
    post();
    return false;
  }

 private:
  int mod(int x) const { return ((x % n_) + n_) % n_; }
  void post() {
    const void* send =
        step_ == 0
            ? static_cast<const void*>(in_ + static_cast<std::size_t>(mod(rank_ - 1)) * bytes_)
            : static_cast<const void*>(tmp_[(step_ - 1) % 2].data.get());
    const int c = static_cast<int>(chunk_);
    int rc = MPI_Irecv(tmp_[step_ % 2].data.get(), c, dt_, mod(rank_ - 1), tag_, comm_, &reqs_[0]);
    if (rc != MPI_SUCCESS) throw CommError(description() + ": MPI_Irecv: " + mpi_error_string(rc));
    rc = MPI_Isend(send, c, dt_, mod(rank_ + 1), tag_, comm_, &reqs_[1]);
    if (rc != MPI_SUCCESS) throw CommError(description() + ": MPI_Isend: " + mpi_error_string(rc));
  }

  MPI_Comm comm_;
  int rank_, n_, tag_;
  const char* in_;
  void* out_;
  std::size_t chunk_, bytes_;
  CommDType t_;
  ReduceOp op_;
  MPI_Datatype dt_;
  std::shared_ptr<MpiScratch> pool_;
  MpiScratch::Item tmp_[2];
  MPI_Request reqs_[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  int step_ = 0;
  bool abandoned_ = false;
};

} // namespace

// ---- MpiRuntime ---------------------------------------------------------------

namespace {
bool g_runtime_alive = false;
}

MpiRuntime::MpiRuntime(int* argc, char*** argv, int required) {
  if (g_runtime_alive) throw std::logic_error("MpiRuntime: only one may exist at a time");
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (fin) throw CommError("MpiRuntime: MPI was already finalized in this process");
  if (!init) {
    const int rc = MPI_Init_thread(argc, argv, required, &provided_);
    if (rc != MPI_SUCCESS)
      throw CommError("MPI_Init_thread failed (error code " + std::to_string(rc) + ")");
    owns_ = true;
  } else {
    mpi_check(MPI_Query_thread(&provided_), "MPI_Query_thread");
  }
  auto fail = [&](const std::string& msg) {
    if (owns_) MPI_Finalize();
    throw CommError(msg);
  };
  if (provided_ < required)
    fail("MpiRuntime: MPI provides thread level " + std::to_string(provided_) +
         ", below the required " + std::to_string(required));
  try {
    mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
              "MPI_Comm_set_errhandler");
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "MPI_Comm_size");
    MPI_Comm local = MPI_COMM_NULL;
    mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank_, MPI_INFO_NULL,
                                  &local),
              "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
    mpi_check(MPI_Comm_rank(local, &local_rank_), "MPI_Comm_rank(local)");
    mpi_check(MPI_Comm_size(local, &local_size_), "MPI_Comm_size(local)");
    mpi_check(MPI_Comm_free(&local), "MPI_Comm_free(local)");
  } catch (const CommError& e) {
    fail(e.what());
  }
  // Spin while waiting when every rank of this node has a core of its own.
  const unsigned cores = std::thread::hardware_concurrency();
  set_comm_spin_seconds(cores > 0 && static_cast<unsigned>(local_size_) <= cores ? 10e-3 : 20e-6);
  g_runtime_alive = true;
}

MpiRuntime::~MpiRuntime() {
  g_runtime_alive = false;
  if (owns_ && mpi_running()) {
    const int rc = MPI_Finalize();
    if (rc != MPI_SUCCESS)
      std::fprintf(stderr, "myelin: MPI_Finalize failed: %s\n", mpi_error_string(rc).c_str());
  }
}

std::unique_ptr<MpiComm> MpiRuntime::world() const { return MpiComm::world(); }

bool MpiRuntime::launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v) != nullptr) return true;
  const char* n = std::getenv("SLURM_NTASKS");
  return n != nullptr && std::atoi(n) > 1;
}

// ---- MpiComm ------------------------------------------------------------------

std::unique_ptr<MpiComm> MpiComm::world() {
  if (!mpi_running())
    throw CommError("MpiComm::world: MPI is not initialized (create an MpiRuntime first)");
  MPI_Comm dup = MPI_COMM_NULL;
  mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup(MPI_COMM_WORLD)");
  return std::make_unique<MpiComm>(dup, "mpi:world");
}

MpiComm::MpiComm(MPI_Comm comm, std::string name)
    : Communicator(std::move(name)), comm_(comm), scratch_(std::make_shared<MpiScratch>()) {
  if (comm == MPI_COMM_NULL) throw std::invalid_argument("MpiComm: MPI_COMM_NULL");
  auto fail = [&](int rc, const char* what) {
    if (rc != MPI_SUCCESS) {
      MPI_Comm_free(&comm_);
      throw CommError(std::string("MpiComm(") + this->name() + "): " + what + ": " +
                      mpi_error_string(rc));
    }
  };
  fail(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  fail(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  fail(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  std::string label = this->name().substr(0, MPI_MAX_OBJECT_NAME - 1);
  fail(MPI_Comm_set_name(comm_, label.c_str()), "MPI_Comm_set_name");
  // World ranks, for messages about a peer.
  MPI_Group mine = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  fail(MPI_Comm_group(comm_, &mine), "MPI_Comm_group");
  fail(MPI_Comm_group(MPI_COMM_WORLD, &world), "MPI_Comm_group(world)");
  std::vector<int> ranks(size_);
  for (int i = 0; i < size_; ++i) ranks[i] = i;
  world_ranks_.assign(size_, -1);
  const int rc = MPI_Group_translate_ranks(mine, size_, ranks.data(), world, world_ranks_.data());
  MPI_Group_free(&mine);
  MPI_Group_free(&world);
  fail(rc, "MPI_Group_translate_ranks");
  // Tags above the user range for the ring reduce-scatter, one per operation
  // that may be in flight at once; none if MPI_TAG_UB is too small.
  int* tag_ub = nullptr;
  int found = 0;
  fail(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &tag_ub, &found), "MPI_Comm_get_attr(MPI_TAG_UB)");
  if (found && tag_ub != nullptr && *tag_ub > kRingTagBase)
    ring_tags_ = std::min(4096, *tag_ub - kRingTagBase);
}

MpiComm::~MpiComm() {
  if (comm_ != MPI_COMM_NULL && mpi_running()) {
    const int rc = MPI_Comm_free(&comm_);
    if (rc != MPI_SUCCESS)
      std::fprintf(stderr, "myelin: MPI_Comm_free(%s): %s\n", name().c_str(),
                   mpi_error_string(rc).c_str());
  }
}

int MpiComm::world_rank_of(int r) const {
  check_rank("world_rank_of", "rank", r);
  return world_ranks_[r];
}

std::string MpiComm::peer_label(int r) const {
  std::string s = std::to_string(r);
  if (world_ranks_[r] != r && world_ranks_[r] >= 0)
    s += " (world rank " + std::to_string(world_ranks_[r]) + ")";
  return s;
}

CommHandle MpiComm::all_reduce_async(const void* send, void* recv, std::size_t count,
                                     CommDType type, ReduceOp op) {
  auto p = std::make_unique<MpiPending>();
  describe(*p, "all_reduce", count, type, reduce_op_name(op), collective_peer());
  const MPI_Datatype dt = mpi_type(type);
  const MPI_Op mop = mpi_op(type, op);
  const bool in_place = send == recv;
  for_chunks(count, [&](std::size_t off, int n) {
    MPI_Request r = MPI_REQUEST_NULL;
    p->issued(MPI_Iallreduce(in_place ? MPI_IN_PLACE : at(send, off, type), at(recv, off, type), n,
                             dt, mop, comm_, &r),
              "MPI_Iallreduce");
    p->add(r);
  });
  if (op == ReduceOp::kAvg && size_ > 1)
    p->finish = [recv, count, type, n = size_] { divide_by(recv, count, type, n); };
  return CommHandle(std::move(p));
}

CommHandle MpiComm::reduce_scatter_async(const void* send, void* recv, std::size_t recv_count,
                                         CommDType type, ReduceOp op) {
  if (recv_count > static_cast<std::size_t>(INT_MAX))
    throw std::invalid_argument(describe_op("reduce_scatter", recv_count, type) +
                                ": at most INT_MAX elements per rank");
  if (size_ > 1 && ring_tags_ > 0) {
    const int tag =
        kRingTagBase + static_cast<int>(ring_seq_++ % static_cast<unsigned>(ring_tags_));
    auto ring = std::make_unique<RingReduceScatter>(comm_, rank_, size_, tag, send, recv,
                                                    recv_count, type, op, scratch_);
    describe(*ring, "reduce_scatter", recv_count, type, reduce_op_name(op), collective_peer());
    ring->start();
    return CommHandle(std::move(ring));
  }
  auto p = std::make_unique<MpiPending>();
  describe(*p, "reduce_scatter", recv_count, type, reduce_op_name(op), collective_peer());
  const bool in_place = recv == at(send, static_cast<std::size_t>(rank_) * recv_count, type);
  MPI_Request r = MPI_REQUEST_NULL;
  // In place, MPI takes the input from the receive buffer and leaves this
  // rank's chunk at its start; it is moved to the rank's offset afterwards.
  void* full = const_cast<void*>(send);
  p->issued(MPI_Ireduce_scatter_block(in_place ? MPI_IN_PLACE : send, in_place ? full : recv,
                                      static_cast<int>(recv_count), mpi_type(type),
                                      mpi_op(type, op), comm_, &r),
            "MPI_Ireduce_scatter_block");
  p->add(r);
  const bool move = in_place && rank_ != 0;
  const bool avg = op == ReduceOp::kAvg && size_ > 1;
  if (move || avg)
    p->finish = [=, n = size_] {
      if (move) std::memmove(recv, full, recv_count * comm_dtype_size(type));
      if (avg) divide_by(recv, recv_count, type, n);
    };
  return CommHandle(std::move(p));
}

CommHandle MpiComm::all_gather_async(const void* send, void* recv, std::size_t send_count,
                                     CommDType type) {
  auto p = std::make_unique<MpiPending>();
  describe(*p, "all_gather", send_count, type, {}, collective_peer());
  if (send_count > static_cast<std::size_t>(INT_MAX))
    throw std::invalid_argument(p->description() + ": at most INT_MAX elements per rank");
  const MPI_Datatype dt = mpi_type(type);
  const int n = static_cast<int>(send_count);
  const bool in_place = send == at(recv, static_cast<std::size_t>(rank_) * send_count, type);
  MPI_Request r = MPI_REQUEST_NULL;
  if (in_place)
    p->issued(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, n, dt, comm_, &r),
              "MPI_Iallgather");
  else
    p->issued(MPI_Iallgather(send, n, dt, recv, n, dt, comm_, &r), "MPI_Iallgather");
  p->add(r);
  return CommHandle(std::move(p));
}

CommHandle MpiComm::broadcast_async(void* buf, std::size_t count, CommDType type, int root) {
  check_rank("broadcast", "root", root);
  auto p = std::make_unique<MpiPending>();
  describe(*p, "broadcast", count, type, "root " + std::to_string(root),
           rank_ == root ? collective_peer() : (size_ == 2 ? root : -1));
  const MPI_Datatype dt = mpi_type(type);
  for_chunks(count, [&](std::size_t off, int n) {
    MPI_Request r = MPI_REQUEST_NULL;
    p->issued(MPI_Ibcast(at(buf, off, type), n, dt, root, comm_, &r), "MPI_Ibcast");
    p->add(r);
  });
  return CommHandle(std::move(p));
}

CommHandle MpiComm::send_async(const void* buf, std::size_t count, CommDType type, int peer,
                               int tag) {
  check_rank("send", "peer", peer);
  check_tag("send", tag);
  auto p = std::make_unique<MpiPending>();
  describe(*p, "send", count, type, "to " + peer_label(peer) + ", tag " + std::to_string(tag),
           peer);
  const MPI_Datatype dt = mpi_type(type);
  for_chunks(count, [&](std::size_t off, int n) {
    MPI_Request r = MPI_REQUEST_NULL;
    p->issued(MPI_Isend(at(buf, off, type), n, dt, peer, tag, comm_, &r), "MPI_Isend");
    p->add(r);
  });
  return CommHandle(std::move(p));
}

CommHandle MpiComm::recv_async(void* buf, std::size_t count, CommDType type, int peer, int tag) {
  check_rank("recv", "peer", peer);
  check_tag("recv", tag);
  auto p = std::make_unique<MpiPending>();
  describe(*p, "recv", count, type, "from " + peer_label(peer) + ", tag " + std::to_string(tag),
           peer);
  const MPI_Datatype dt = mpi_type(type);
  p->dtype = dt;
  for_chunks(count, [&](std::size_t off, int n) {
    MPI_Request r = MPI_REQUEST_NULL;
    p->issued(MPI_Irecv(at(buf, off, type), n, dt, peer, tag, comm_, &r), "MPI_Irecv");
    p->add(r, n);
  });
  return CommHandle(std::move(p));
}

CommHandle MpiComm::sendrecv_async(const void* send, std::size_t send_count, int dst, void* recv,
                                   std::size_t recv_count, int src, CommDType type, int tag) {
  check_rank("sendrecv", "dst", dst);
  check_rank("sendrecv", "src", src);
  check_tag("sendrecv", tag);
  auto p = std::make_unique<MpiPending>();
  describe(*p, "sendrecv", recv_count, type,
           "to " + peer_label(dst) + ", from " + peer_label(src) + ", tag " + std::to_string(tag),
           src);
  const MPI_Datatype dt = mpi_type(type);
  p->dtype = dt;
  for_chunks(recv_count, [&](std::size_t off, int n) {
    MPI_Request r = MPI_REQUEST_NULL;
    p->issued(MPI_Irecv(at(recv, off, type), n, dt, src, tag, comm_, &r), "MPI_Irecv");
    p->add(r, n);
  });
  for_chunks(send_count, [&](std::size_t off, int n) {
    MPI_Request r = MPI_REQUEST_NULL;
    p->issued(MPI_Isend(at(send, off, type), n, dt, dst, tag, comm_, &r), "MPI_Isend");
    p->add(r);
  });
  return CommHandle(std::move(p));
}

CommHandle MpiComm::barrier_async() {
  auto p = std::make_unique<MpiPending>();
  describe(*p, "barrier", 0, CommDType::kU8, {}, collective_peer());
  MPI_Request r = MPI_REQUEST_NULL;
  p->issued(MPI_Ibarrier(comm_, &r), "MPI_Ibarrier");
  p->add(r);
  return CommHandle(std::move(p));
}

std::unique_ptr<Communicator> MpiComm::split(int color, int key) {
  // Exchange (color, key) with a gather that honours the timeout, then build
  // the group locally; only its members take part in MPI_Comm_create_group.
  const int mine[2] = {color < 0 ? -1 : color, key};
  std::vector<int> all(2 * static_cast<std::size_t>(size_));
  all_gather(mine, all.data(), 2, CommDType::kI32);
  if (color < 0) return nullptr;
  std::vector<int> members;
  for (int r = 0; r < size_; ++r)
    if (all[2 * r] == color) members.push_back(r);
  std::stable_sort(members.begin(), members.end(),
                   [&](int a, int b) { return all[2 * a + 1] < all[2 * b + 1]; });
  const std::string what =
      "split(" + std::to_string(color) + ", " + std::to_string(key) + ") of " + name();
  MPI_Group parent = MPI_GROUP_NULL, sub = MPI_GROUP_NULL;
  mpi_check(MPI_Comm_group(comm_, &parent), what + ": MPI_Comm_group");
  int rc = MPI_Group_incl(parent, static_cast<int>(members.size()), members.data(), &sub);
  MPI_Group_free(&parent);
  mpi_check(rc, what + ": MPI_Group_incl");
  MPI_Comm nc = MPI_COMM_NULL;
  rc = MPI_Comm_create_group(comm_, sub, kSplitTag, &nc);
  MPI_Group_free(&sub);
  mpi_check(rc, what + ": MPI_Comm_create_group");
  auto c = std::make_unique<MpiComm>(nc, name() + "/split(" + std::to_string(color) + ")");
  c->set_timeout(timeout());
  return c;
}

} // namespace myelin
