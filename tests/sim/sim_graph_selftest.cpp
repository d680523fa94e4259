// Self-tests of the simulator's stream capture and graphs (sim_graph.cpp):
// captured work runs at each graph launch and not before, with the arguments
// it was queued with, reading host memory at the launch; a capture that waits
// for the device, allocates or copies from pageable memory fails and leaves
// no graph; launch-configuration errors are reported at the capture.
#include <gtest/gtest.h>

#include <vector>

#include "sim_device.h"
#include "sim_runtime.h"
#include "sim_selftest.h"

namespace {

using sim::selftest::Buf;

__global__ void axpb(float* x, float a, float b, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) x[i] = a * x[i] + b;
}

constexpr int kN = 64;

void queue_axpb(cudaStream_t s, float* x, float a, float b, dim3 block = dim3(32)) {
  sim::launch({"axpb", __FILE__, __LINE__}, sim::config(dim3(kN / 32), block, 0, s), axpb, x, a, b,
              kN);
}

struct Stream {
  Stream() { EXPECT_EQ(sim::cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess); }
  ~Stream() { sim::cudaStreamDestroy(s); }
  cudaStream_t s = nullptr;
};

// Ends the capture on s and returns its error (destroying a graph it made).
cudaError_t end_capture(cudaStream_t s) {
  cudaGraph_t g = nullptr;
  const cudaError_t e = sim::cudaStreamEndCapture(s, &g);
  if (g) sim::cudaGraphDestroy(g);
  return e;
}

TEST(SimGraph, CapturedWorkRunsAtEachLaunch) {
  Stream st;
  Buf<float> x(kN);
  float* host = nullptr;
  ASSERT_EQ(sim::cudaMallocHost(reinterpret_cast<void**>(&host), kN * sizeof(float)), cudaSuccess);
  for (int i = 0; i < kN; ++i) host[i] = float(i);
  const long live0 = sim::graph_stats().live;

  ASSERT_EQ(sim::cudaStreamBeginCapture(st.s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  cudaStreamCaptureStatus status{};
  EXPECT_EQ(sim::cudaStreamIsCapturing(st.s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  EXPECT_EQ(sim::cudaMemcpyAsync(x.p, host, kN * sizeof(float), cudaMemcpyHostToDevice, st.s),
            cudaSuccess);
  float a = 2.0f; // the kernel gets the value at the launch, not the variable
  queue_axpb(st.s, x.p, a, 1.0f);
  a = 100.0f;
  EXPECT_EQ(sim::cudaMemsetAsync(x.p, 0, sizeof(float), st.s), cudaSuccess);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(sim::cudaStreamEndCapture(st.s, &g), cudaSuccess);
  EXPECT_EQ(x.get(), std::vector<float>(kN, 0.0f)) << "captured work ran at the capture";
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(sim::cudaGraphInstantiate(&exec, g, 0), cudaSuccess);
  EXPECT_EQ(sim::cudaGraphDestroy(g), cudaSuccess); // the executable graph outlives it

  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kN; ++i) host[i] = float(i + round); // read at each launch
    ASSERT_EQ(sim::cudaGraphLaunch(exec, st.s), cudaSuccess);
    const std::vector<float> got = x.get();
    EXPECT_EQ(got[0], 0.0f) << "the memset after the kernel";
    for (int i = 1; i < kN; ++i) ASSERT_EQ(got[std::size_t(i)], 2.0f * float(i + round) + 1.0f);
  }
  EXPECT_EQ(sim::cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(sim::graph_stats().live, live0);
  sim::cudaFreeHost(host);
}

TEST(SimGraph, WaitingOrAllocatingInvalidatesTheCapture) {
  Stream st, other;
  Buf<float> x(kN);
  std::vector<float> pageable(kN, 1.0f);
  const auto attempts = {
      +[](cudaStream_t s, cudaStream_t, float*, float*) { return sim::cudaStreamSynchronize(s); },
      +[](cudaStream_t, cudaStream_t o, float*, float*) { return sim::cudaStreamSynchronize(o); },
      +[](cudaStream_t, cudaStream_t, float*, float*) { return sim::cudaDeviceSynchronize(); },
      +[](cudaStream_t, cudaStream_t, float* d, float* h) {
        return sim::cudaMemcpy(h, d, 4, cudaMemcpyDeviceToHost);
      },
      +[](cudaStream_t s, cudaStream_t, float* d, float* h) {
        return sim::cudaMemcpyAsync(d, h, 4, cudaMemcpyHostToDevice, s); // pageable
      },
      +[](cudaStream_t, cudaStream_t, float*, float*) {
        void* p = nullptr;
        return sim::cudaMalloc(&p, 16);
      },
      +[](cudaStream_t, cudaStream_t, float*, float*) {
        cudaEvent_t e = nullptr;
        sim::cudaEventCreate(&e);
        const cudaError_t r = sim::cudaEventQuery(e);
        sim::cudaEventDestroy(e);
        return r;
      },
  };
  int k = 0;
  for (auto attempt : attempts) {
    SCOPED_TRACE("attempt " + std::to_string(k++));
    ASSERT_EQ(sim::cudaStreamBeginCapture(st.s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    queue_axpb(st.s, x.p, 1.0f, 1.0f);
    EXPECT_EQ(attempt(st.s, other.s, x.p, pageable.data()), cudaErrorStreamCaptureUnsupported);
    EXPECT_EQ(end_capture(st.s), cudaErrorStreamCaptureInvalidated);
    // The stream is usable again, and nothing of the failed capture ran.
    EXPECT_EQ(sim::cudaStreamSynchronize(st.s), cudaSuccess);
    EXPECT_EQ(x.get(), std::vector<float>(kN, 0.0f));
  }
  // Relaxed mode allows the calls of other streams, not waiting for the capturing one.
  ASSERT_EQ(sim::cudaStreamBeginCapture(st.s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(sim::cudaStreamSynchronize(other.s), cudaSuccess);
  EXPECT_EQ(sim::cudaStreamSynchronize(st.s), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(end_capture(st.s), cudaErrorStreamCaptureInvalidated);
  // The legacy stream cannot capture.
  EXPECT_EQ(sim::cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeThreadLocal),
            cudaErrorStreamCaptureUnsupported);
}

TEST(SimGraph, LaunchErrorsAtTheCapture) {
  Stream st;
  Buf<float> x(kN);
  (void)sim::cudaGetLastError();
  ASSERT_EQ(sim::cudaStreamBeginCapture(st.s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  queue_axpb(st.s, x.p, 1.0f, 1.0f, dim3(2048)); // more threads than a block may have
  EXPECT_EQ(sim::cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(end_capture(st.s), cudaSuccess);
}

} // namespace
