// NcclComm on one GPU, without MPI: a world of one rank made in-process from
// NcclComm::make_unique_id(). Every collective the comm bench checks
// (all_reduce, reduce_scatter, all_gather, sendrecv to self) in every type and
// reduction, in and out of place, on NaN-poisoned outputs; broadcast; split;
// barrier; that operations wait for the work queued on the input stream (the
// engine's stream in training) and that split and Mesh pass it on; a lone send
// to self refused without harm; and a timeout that aborts the communicator.
// Without a CUDA device every test reports "skipped: no CUDA device".
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/bench/comm_bench.h"
#include "runtime/comm/mesh.h"
#include "runtime/comm/nccl_comm.h"
#include "runtime/model/engine.h"
#include "tests/common/engine_check.h"
#include "tests/gpu/gpu_test.h"

namespace {

using namespace myelin;

std::unique_ptr<NcclComm> one_rank(double timeout_s = 60) {
  return NcclComm::create(NcclComm::make_unique_id(), 0, 1, 0, timeout_s, "nccl:one");
}

void check_cuda(cudaError_t e, const char* what) {
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
}

// A non-blocking stream, like the engine's.
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { check_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream"); }
  ~Stream() { cudaStreamDestroy(s); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

// The comm bench's own check, one run per type, reduction and placement.
void expect_bench_checks(Communicator& c, CommDType t, ReduceOp op, bool in_place) {
  std::ostringstream table;
  CommBenchOptions o;
  o.max_bytes = 64 << 10; // 8 B .. 64 KiB
  o.warmup = 0;
  o.iters = 1;
  o.dtype = t;
  o.op = op;
  o.in_place = in_place;
  o.out = &table;
  EXPECT_EQ(run_comm_bench(c, o), 0) << c.name() << " " << comm_dtype_name(t) << " "
                                     << reduce_op_name(op) << (in_place ? " in place" : "") << "\n"
                                     << table.str();
}

// A kernel on `s` holds the stream for 200 ms, then writes 2.0 into src (which
// holds 1.0); an out-of-place all_reduce issued right after must see 2.0.
void expect_waits_for_stream(Communicator& c, cudaStream_t s, const std::string& what) {
  const std::size_t n = std::size_t{1} << 20;
  CommBuffer src(c, n * sizeof(float)), dst(c, n * sizeof(float));
  std::vector<float> h(n, 1.0f);
  c.copy_from_host(src.data(), h.data(), n * sizeof(float));
  std::fill(h.begin(), h.end(), 0.0f);
  c.copy_from_host(dst.data(), h.data(), n * sizeof(float));
  gpu_test::slow_fill(static_cast<float*>(src.data()), n, 2.0f, 0.2, nullptr, s);
  c.all_reduce(src.data(), dst.data(), n, CommDType::kF32, ReduceOp::kSum);
  c.copy_to_host(h.data(), dst.data(), n * sizeof(float));
  std::size_t stale = 0;
  for (float v : h) stale += v != 2.0f;
  EXPECT_EQ(stale, 0u) << what << ": the all_reduce read the source before the kernel on the "
                       << "input stream wrote it (first value " << h[0] << ")";
  check_cuda(cudaStreamSynchronize(s), "sync");
}

TEST(NcclOneGpu, EveryCollectiveTypeAndPlacement) {
  REQUIRE_GPU();
  auto c = one_rank();
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->memory(), MemorySpace::kDevice);
  for (CommDType t :
       {CommDType::kF32, CommDType::kBF16, CommDType::kF64, CommDType::kI32, CommDType::kU8})
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin})
      for (bool in_place : {false, true}) expect_bench_checks(*c, t, op, in_place);
}

TEST(NcclOneGpu, BroadcastBarrierAndSplit) {
  REQUIRE_GPU();
  auto c = one_rank();
  const std::size_t n = 1001;
  CommBuffer b(*c, n * sizeof(double));
  std::vector<double> h(n), back(n, -1.0);
  for (std::size_t i = 0; i < n; ++i) h[i] = double(i % 13) + 0.5;
  c->copy_from_host(b.data(), h.data(), n * sizeof(double));
  c->broadcast(b.data(), n, CommDType::kF64, 0);
  c->copy_to_host(back.data(), b.data(), n * sizeof(double));
  EXPECT_EQ(back, h) << "broadcast from root 0 of one rank keeps the buffer";
  c->barrier();
  c->barrier_async().wait();
  auto sub = c->split(0, 0);
  ASSERT_TRUE(sub != nullptr);
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->timeout(), c->timeout());
  expect_bench_checks(*sub, CommDType::kF32, ReduceOp::kSum, false);
  sub->barrier();
  EXPECT_TRUE(c->split(-1, 0) == nullptr) << "a negative color takes no part";
}

TEST(NcclOneGpu, LoneSendToSelfIsRefusedWithoutHarm) {
  REQUIRE_GPU();
  auto c = one_rank();
  CommBuffer b(*c, 64);
  // NCCL pairs a send to self only with a recv in the same call (sendrecv).
  EXPECT_THROW(c->send(b.data(), 4, CommDType::kF32, 0), std::invalid_argument);
  EXPECT_THROW(c->recv(b.data(), 4, CommDType::kF32, 0), std::invalid_argument);
  EXPECT_FALSE(c->aborted());
  float x[4] = {1, 2, 3, 4}, y[4] = {};
  CommBuffer s(*c, sizeof x);
  c->copy_from_host(s.data(), x, sizeof x);
  c->sendrecv(s.data(), 4, 0, b.data(), 4, 0, CommDType::kF32);
  c->copy_to_host(y, b.data(), sizeof y);
  EXPECT_EQ(std::memcmp(x, y, sizeof x), 0) << "sendrecv to self copies";
}

// Without set_input_stream (or with the legacy stream) the all_reduce below
// would copy the stale 1.0: NCCL's stream does not wait for a non-blocking one.
TEST(NcclOneGpu, OperationsWaitForTheInputStream) {
  REQUIRE_GPU();
  auto c = one_rank();
  Stream s;
  c->set_input_stream(s.s);
  expect_waits_for_stream(*c, s.s, "set_input_stream");
  auto sub = c->split(0, 0);
  ASSERT_TRUE(sub != nullptr);
  expect_waits_for_stream(*sub, s.s, "split() keeps the input stream");
}

// What the trainer does: its NCCL mesh waits on the engine's stream.
TEST(NcclOneGpu, MeshWaitsForTheEngineStream) {
  REQUIRE_GPU();
  const auto cfg = engine_check::tiny_config();
  auto e = engine_check::cuda_engine(cfg, "fp32");
  ASSERT_NE(e->device_stream(), nullptr);
  Mesh m(one_rank(), 1, 1);
  m.set_input_stream(e->device_stream());
  const auto s = static_cast<cudaStream_t>(e->device_stream());
  expect_waits_for_stream(m.world(), s, "mesh world");
  expect_waits_for_stream(m.dp(), s, "mesh dp");
  expect_waits_for_stream(m.pp(), s, "mesh pp");
}

// The deadline: an all_reduce that cannot start (its input stream is held by
// a kernel) times out, the communicator is aborted, and later calls fail.
TEST(NcclOneGpu, TimeoutAbortsTheCommunicator) {
  REQUIRE_GPU();
  const double limit = 0.3, hold = 2.0;
  auto c = one_rank(limit);
  Stream s;
  int* release = nullptr;
  check_cuda(cudaHostAlloc(reinterpret_cast<void**>(&release), sizeof(int), cudaHostAllocMapped),
             "cudaHostAlloc");
  *release = 0;
  int* release_dev = nullptr;
  check_cuda(cudaHostGetDevicePointer(reinterpret_cast<void**>(&release_dev), release, 0),
             "cudaHostGetDevicePointer");
  CommBuffer a(*c, 4096), b(*c, 4096);
  gpu_test::slow_fill(static_cast<float*>(a.data()), 1024, 1.0f, hold, release_dev, s.s);
  c->set_input_stream(s.s);
  const auto t0 = std::chrono::steady_clock::now();
  bool timed_out = false;
  try {
    c->all_reduce(a.data(), b.data(), 1024, CommDType::kF32, ReduceOp::kSum);
  } catch (const CommTimeout& e) {
    timed_out = e.op() == "all_reduce";
    std::printf("caught: %s\n", e.what());
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  *reinterpret_cast<volatile int*>(release) = 1;
  EXPECT_TRUE(timed_out) << "the all_reduce threw CommTimeout naming all_reduce";
  EXPECT_GE(dt, limit);
  // ncclCommAbort may wait for the device to drain (the held kernel, at most `hold`).
  EXPECT_LT(dt, limit + hold + 3.0);
  EXPECT_TRUE(c->aborted());
  bool refused = false;
  try {
    c->barrier();
  } catch (const CommError& e) {
    refused = std::string(e.what()).find("aborted") != std::string::npos;
  }
  EXPECT_TRUE(refused) << "a call on an aborted communicator throws CommError naming the abort";
  check_cuda(cudaStreamSynchronize(s.s), "sync");
  cudaFreeHost(release);
}

} // namespace
