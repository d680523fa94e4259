// CPU simulation of CUDA kernels: the host-side interface (namespace sim).
//
// THIS IS A SIMULATION, NOT A GPU. It runs the real source code of the kernels
// in kernels/cuda/*.cu on the host, one CUDA thread at a time, so that logic
// errors (indexing, masking, partial tiles, missing barriers, warp-shuffle
// reductions, shared-memory bounds, launch configuration) show up in CI on
// machines without a GPU. tests/sim/gen_sim.py turns each .cu file into a host
// .cpp by a few mechanical rewrites (kernel launches, shared-memory
// declarations, CUDA runtime calls); sim_device.h supplies what device code
// needs (threadIdx, __syncthreads, shuffles, intrinsics), sim_wmma.h a mock of
// nvcuda::wmma.
//
// What is simulated:
//  * the execution model: a grid of blocks, each block's threads run as
//    cooperative fibers (user-mode stacks) on one host thread; a thread runs
//    until it reaches __syncthreads, __syncwarp, a shuffle or a wmma
//    collective, or exits. Blocks run on a small pool of host threads.
//  * barriers: __syncthreads waits for every thread of the block, warp
//    collectives (shuffles, __syncwarp, wmma *_sync) for the 32 lanes of the
//    warp. Deadlocks, barriers after some threads exited, lanes of one warp at
//    different collectives and __syncthreads reached from different places are
//    reported as errors, with the kernel, block, thread and source line.
//  * the order in which threads run between two barriers is chosen by a
//    Schedule (forward, reverse, alternating per block, random). A missing
//    barrier makes the result depend on that order: the tests run kernels under
//    two opposite schedules and require bit-identical results.
//  * memory: device memory is host memory (cudaMalloc: 256-byte aligned, each
//    allocation in its own mapping that ends less than 512 bytes before an
//    inaccessible page; contents start as 0xFF bytes, i.e. NaN). Shared memory
//    is allocated per block the same way, with exactly its declared alignment,
//    filled with 0xFF so that reads of unwritten shared memory poison results.
//    An access beyond the inaccessible page's boundary faults at once and the
//    simulator names the kernel, block, thread and the allocation; writes into
//    the slack before it are found after the block (shared) or the launch
//    (device memory) and fail the launch. Typed accesses must be aligned as on
//    the GPU (UBSan's alignment check, compiled in when available). Under
//    AddressSanitizer (test_sim_kernels_asan) allocations are exact-size heap
//    blocks instead and ASan checks every access.
//  * launch configuration: grid and block limits of an sm_90 GPU, dynamic
//    shared memory above 48 KiB only after cudaFuncSetAttribute, at most
//    227 KiB, __launch_bounds__ honoured; errors come back through
//    cudaGetLastError as on a GPU (so MYELIN_CUDA_CHECK_LAUNCH throws).
//
//  * inline PTX of kernels/cuda/ptx.cuh (sim_ptx.h): mma.sync m16n8k16 bf16 and
//    ldmatrix as warp collectives with the PTX ISA's fragment layouts; cp.async
//    copies that poison their destination when issued and land only at the
//    cp.async.wait_group / wait_all covering them (a thread exiting with
//    copies in flight fails the launch).
//
// What is NOT simulated: timing and performance of any kind; the memory model
// beyond barriers (no caches, no weak ordering, no TMA or cuda::memcpy_async);
// warps are 32 fibers synchronised at each collective, not lockstep SIMT;
// atomics, cooperative groups, textures, inline PTX other than ptx.cuh's are
// not supported (the generator or the compiler rejects them); device math uses the host libm (expf
// etc. differ from the GPU's by an ulp or two); wmma numerics are exact products with fp32
// accumulation in a fixed order (sim_wmma.h); kernels run synchronously at the
// launch, and events are no-ops. cuBLASLt is emulated on the host
// (sim_cublaslt.cpp, engine simulation only), not run.
//
// Stream capture and graphs (sim_graph.cpp): work queued on a stream that is
// capturing is recorded, not run (kernel launches with their arguments as
// converted at the launch, asynchronous copies and memsets, cuBLASLt
// matmuls); cudaGraphLaunch runs the recorded work in order. So a graph
// replays exactly what was queued: a copy from host memory reads the host
// buffer at each replay, a kernel sees the pointers and scalars it was
// captured with. As on a GPU, a capturing thread (mode global or
// thread-local) may not wait or allocate: cudaStreamSynchronize, cudaMemcpy,
// cudaMalloc, cudaEventQuery, a copy from pageable memory ... fail with
// cudaErrorStreamCaptureUnsupported and invalidate the capture, whose
// cudaStreamEndCapture then fails with cudaErrorStreamCaptureInvalidated.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace sim {

// ---- schedule of the threads of a block between two barriers --------------------------------
enum class Schedule {
  kForward,          // threads in increasing index
  kReverse,          // decreasing index
  kAlternate,        // forward in blocks of even linear index, reverse in odd ones
  kAlternateSwapped, // reverse in even blocks, forward in odd ones
  kRandom,           // a new pseudo-random order at every step (seeded, reproducible)
};
void set_schedule(Schedule s, std::uint64_t seed = 1);
Schedule schedule();
// Sets a schedule for the lifetime of the object.
class ScheduleScope {
 public:
  explicit ScheduleScope(Schedule s, std::uint64_t seed = 1);
  ~ScheduleScope();
  ScheduleScope(const ScheduleScope&) = delete;
  ScheduleScope& operator=(const ScheduleScope&) = delete;

 private:
  Schedule old_;
  std::uint64_t old_seed_;
};
// Host threads that run blocks (default: hardware concurrency, at most 4, or
// $MYELIN_SIM_THREADS). The result never depends on it.
void set_host_threads(int n);

// Statistics since the start of the process (for the tests' own checks).
struct Stats {
  std::uint64_t launches, blocks, threads, block_barriers, warp_collectives;
};
Stats stats();

// ---- the CUDA runtime calls that kernels/cuda/*.cu make, host memory behind them ---------------
cudaError_t cudaMalloc(void** p, std::size_t bytes);
template <typename T> cudaError_t cudaMalloc(T** p, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFree(void* p);
// Page-locked host memory (plain host memory here, remembered so that copies
// from and to it count as asynchronous).
cudaError_t cudaMallocHost(void** p, std::size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int value, std::size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
// Captures, graph launches and the nodes they ran since the start of the
// process; graphs and executable graphs alive (leak checks).
struct GraphStats {
  std::uint64_t captures, launches, nodes_run;
  long live;
};
GraphStats graph_stats();
// The next capture begun fails as if a call in it had been refused (its
// cudaStreamEndCapture returns cudaErrorStreamCaptureInvalidated): for tests
// of what callers do then.
void invalidate_next_capture();
// Returns and clears the calling host thread's last launch error.
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t e);
// For the error of the last failed launch: the simulator's full description.
const char* cudaGetErrorString(cudaError_t e);

namespace detail {
// Work queued on stream s: when s is capturing, `node` is recorded into its
// graph (to run at each launch; it returns the error of that run) and true is
// returned; otherwise false and the caller runs the work itself.
bool capture(cudaStream_t s, std::function<cudaError_t()> node);
bool is_capturing(cudaStream_t s);
// A call that may wait for the device or allocate (`what`, for the message)
// from a thread with a capture in mode global or thread-local: the capture is
// invalidated and the call must fail with the error returned (else cudaSuccess).
cudaError_t unsafe_during_capture(const char* what);
void count_host_sync(); // sim::host_syncs
// A runtime call failed with e: cudaGetLastError reports it (as it reports
// every failed runtime call's error on a GPU).
void set_api_error(cudaError_t e);

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value);
} // namespace detail
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return detail::func_set_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}

// Host synchronisations since the start of the process: cudaStreamSynchronize,
// cudaDeviceSynchronize, cudaEventSynchronize, cudaMemcpy, and cudaMemcpyAsync
// between the device and pageable (not cudaMallocHost) host memory, which may
// block the host on a GPU. For the engine's one-sync-per-step test.
std::uint64_t host_syncs();

// Number of bytes of live device allocations (leak checks in the tests).
std::size_t device_bytes_in_use();

// ---- kernel launch ----------------------------------------------------------------------------
struct LaunchConfig {
  dim3 grid, block;
  std::size_t smem;
  cudaStream_t stream;
};
inline LaunchConfig config(dim3 grid, dim3 block, std::size_t smem = 0,
                           cudaStream_t stream = nullptr) {
  return {grid, block, smem, stream};
}

namespace detail {
struct KernelBody {
  void* obj;
  void (*run)(void* obj);
};
struct LaunchSite {
  const char* kernel; // as written at the launch, e.g. "attn_fwd_kernel<T, HS>"
  const char* file;
  int line;
};
void run_grid(const LaunchSite& site, const void* kernel, const LaunchConfig& cfg, KernelBody body);
// The launch configuration checks of run_grid alone (errors through cudaGetLastError).
bool check_launch(const LaunchSite& site, const void* kernel, const LaunchConfig& cfg);
} // namespace detail

// `kernel<<<cfg>>>(args...)` is rewritten to launch(site, config(cfg), kernel, args...).
// The arguments are converted to the parameter types once, at the launch, and
// every thread receives its own copies, as on a GPU. Runs the whole grid before
// returning (on a capturing stream: checks the configuration and records the
// launch with its converted arguments); errors are reported through
// cudaGetLastError().
template <typename... P, typename... A>
void launch(const detail::LaunchSite& site, const LaunchConfig& cfg, void (*kernel)(P...),
            A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with a wrong number of arguments");
  struct Frame {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> args;
  } frame{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
  const auto run = [](void* obj) {
    auto* f = static_cast<Frame*>(obj);
    std::apply(f->kernel, f->args);
  };
  const void* k = reinterpret_cast<const void*>(kernel);
  if (detail::is_capturing(cfg.stream)) {
    auto recorded = std::make_shared<Frame>(frame);
    detail::capture(cfg.stream, [site, k, cfg, recorded, run]() {
      detail::run_grid(site, k, cfg, detail::KernelBody{recorded.get(), run});
      return cudaGetLastError();
    });
    detail::check_launch(site, k, cfg);
    return;
  }
  detail::run_grid(site, k, cfg, detail::KernelBody{&frame, run});
}

} // namespace sim
