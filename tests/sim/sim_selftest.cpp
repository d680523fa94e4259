// Self-tests of the CUDA kernel SIMULATOR (tests/sim): small kernels written
// here, each with a known bug or a known-correct pattern, show that the
// simulator computes what CUDA defines and reports the bugs it claims to catch
// (missing barriers, deadlocks, divergent barriers and warp collectives, shared
// and device memory overruns, launch-configuration errors, wmma misuse).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "sim_device.h"
#include "sim_runtime.h"
#include "sim_selftest.h"
#include "sim_wmma.h"

#if defined(__SANITIZE_ADDRESS__)
#define SIM_TEST_ASAN 1
#else
#define SIM_TEST_ASAN 0
#endif

namespace {

using sim::selftest::Buf;
using sim::selftest::run;
std::string message(cudaError_t e) { return sim::cudaGetErrorString(e); }

constexpr int kN = 256;

// Tree sum in static shared memory, as kernels write it.
__global__ void tree_sum(float* out, const float* in) {
  auto& sh = sim::detail::static_shared<float[kN], 0>([] {});
  const int t = int(threadIdx.x);
  sh[t] = in[blockIdx.x * kN + t];
  __syncthreads();
  for (int o = kN / 2; o > 0; o >>= 1) {
    if (t < o) sh[t] += sh[t + o];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = sh[0];
}
// The same without the barrier inside the loop: a race.
__global__ void tree_sum_racy(float* out, const float* in) {
  auto& sh = sim::detail::static_shared<float[kN], 0>([] {});
  const int t = int(threadIdx.x);
  sh[t] = in[blockIdx.x * kN + t];
  __syncthreads();
  for (int o = kN / 2; o > 0; o >>= 1)
    if (t < o) sh[t] += sh[t + o];
  __syncthreads();
  if (t == 0) out[blockIdx.x] = sh[0];
}

TEST(SimSelfTest, MissingBarrierDependsOnSchedule) {
  Buf<float> in(4 * kN), out(4);
  std::vector<float> x(4 * kN);
  std::iota(x.begin(), x.end(), 1.0f);
  in.set(x);
  const float want[4] = {32896.0f, 98432.0f, 163968.0f, 229504.0f};
  for (sim::Schedule s : {sim::Schedule::kForward, sim::Schedule::kReverse,
                          sim::Schedule::kAlternate, sim::Schedule::kRandom}) {
    sim::ScheduleScope scope(s, 99);
    ASSERT_EQ(run(4, kN, 0, tree_sum, out.p, in.p), cudaSuccess);
    const auto r = out.get();
    for (int b = 0; b < 4; ++b) EXPECT_EQ(r[std::size_t(b)], want[b]) << int(s);
  }
  std::vector<float> fwd, rev;
  {
    sim::ScheduleScope scope(sim::Schedule::kForward);
    ASSERT_EQ(run(4, kN, 0, tree_sum_racy, out.p, in.p), cudaSuccess);
    fwd = out.get();
  }
  {
    sim::ScheduleScope scope(sim::Schedule::kReverse);
    ASSERT_EQ(run(4, kN, 0, tree_sum_racy, out.p, in.p), cudaSuccess);
    rev = out.get();
  }
  EXPECT_NE(0, std::memcmp(fwd.data(), rev.data(), 4 * sizeof(float)))
      << "a missing barrier must make the result depend on the schedule";
}

// ---- shuffles: the CUDA programming guide's definitions -------------------------------------
__global__ void shuffles(int* out) {
  const int lane = int(threadIdx.x) & 31, w = int(threadIdx.x) >> 5;
  int* o = out + w * 32 * 8 + lane * 8;
  const int v = 100 * w + lane;
  o[0] = __shfl_xor_sync(0xffffffffu, v, 5);
  o[1] = __shfl_down_sync(0xffffffffu, v, 3u);
  o[2] = __shfl_up_sync(0xffffffffu, v, 2u);
  o[3] = __shfl_sync(0xffffffffu, v, 7);
  o[4] = __shfl_sync(0xffffffffu, v, lane + 9, 8); // within groups of 8, src mod 8
  o[5] = __shfl_down_sync(0xffffffffu, v, 2u, 16); // no crossing of a 16-lane segment
  o[6] = __shfl_xor_sync(0xffffffffu, v, 16, 16);  // later segment: own value; earlier: read
  double d = double(v) + 0.5;
  for (int k = 16; k > 0; k >>= 1) d += __shfl_xor_sync(0xffffffffu, d, k); // butterfly sum
  o[7] = int(d);
}

TEST(SimSelfTest, ShufflesFollowCudaSemantics) {
  Buf<int> out(2 * 32 * 8);
  ASSERT_EQ(run(1, 64, 0, shuffles, out.p), cudaSuccess);
  const auto r = out.get();
  for (int w = 0; w < 2; ++w)
    for (int l = 0; l < 32; ++l) {
      const int* o = &r[std::size_t(w * 256 + l * 8)];
      const int base = 100 * w;
      EXPECT_EQ(o[0], base + (l ^ 5));
      EXPECT_EQ(o[1], base + (l + 3 < 32 ? l + 3 : l));
      EXPECT_EQ(o[2], base + (l >= 2 ? l - 2 : l));
      EXPECT_EQ(o[3], base + 7);
      EXPECT_EQ(o[4], base + (l & ~7) + ((l + 9) & 7));
      EXPECT_EQ(o[5], base + ((l & 15) + 2 < 16 ? l + 2 : l));
      EXPECT_EQ(o[6], base + (l < 16 ? l : l - 16));
      EXPECT_EQ(o[7], 32 * base + 496 + 16);
    }
}

// ---- programming-model violations are reported ------------------------------------------------
__global__ void barrier_in_branch(int* out) {
  if (threadIdx.x < 32) __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void divergent_barriers(int* out) {
  if (threadIdx.x < 32)
    __syncthreads();
  else
    __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void warp_vs_block_deadlock(int* out) {
  if ((threadIdx.x & 31) < 16)
    __syncwarp();
  else
    __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void shuffle_after_exit(int* out) {
  if ((threadIdx.x & 31) >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}
__global__ void partial_mask(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, int(threadIdx.x), 1);
}
__global__ void mixed_collectives(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x & 1)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  else
    __syncwarp();
  out[threadIdx.x] = v;
}

void expect_failure(cudaError_t e, const char* needle) {
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  EXPECT_NE(message(e).find(needle), std::string::npos) << message(e);
  EXPECT_NE(message(e).find("sim_selftest.cpp"), std::string::npos) << message(e);
}

TEST(SimSelfTest, ReportsProgrammingModelViolations) {
  Buf<int> out(64);
  for (sim::Schedule s : {sim::Schedule::kForward, sim::Schedule::kReverse}) {
    sim::ScheduleScope scope(s);
    expect_failure(run(1, 64, 0, barrier_in_branch, out.p), "__syncthreads()");
    expect_failure(run(1, 64, 0, divergent_barriers, out.p), "divergent barriers");
    expect_failure(run(1, 32, 0, warp_vs_block_deadlock, out.p), "deadlock");
    expect_failure(run(1, 64, 0, shuffle_after_exit, out.p), "exited");
    expect_failure(run(1, 32, 0, partial_mask, out.p), "mask");
    expect_failure(run(1, 32, 0, mixed_collectives, out.p), "lanes of warp 0");
  }
  // A later, correct launch is not affected.
  Buf<float> in(kN), sum(1);
  in.set(std::vector<float>(kN, 1.0f));
  EXPECT_EQ(run(1, kN, 0, tree_sum, sum.p, in.p), cudaSuccess);
  EXPECT_EQ(sum.get()[0], float(kN));
}

// ---- memory ------------------------------------------------------------------------------------
__global__ void write_past_shared(int* out) {
  auto& sh = sim::detail::static_shared<int[32], 0>([] {});
  int* p = sh;
  p[threadIdx.x] = 1; // 33 threads: one element too many
  __syncthreads();
  out[0] = sh[0];
}
__global__ void write_past_dynamic(int* out, int n) {
  int* const sh = static_cast<int*>(sim::detail::dynamic_shared(alignof(int)));
  if (int(threadIdx.x) <= n) sh[threadIdx.x] = 1;
  __syncthreads();
  out[0] = sh[0];
}
__global__ void write_past_global(int* out, int n) {
  if (int(threadIdx.x) <= n) out[threadIdx.x] = 1;
}
__global__ void read_unwritten_shared(float* out) {
  auto& sh = sim::detail::static_shared<float[64], 0>([] {});
  if (threadIdx.x < 32) sh[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = sh[threadIdx.x]; // 32..63 never written
}

TEST(SimSelfTest, DetectsOutOfBoundsWrites) {
  if (SIM_TEST_ASAN) GTEST_SKIP() << "AddressSanitizer reports these itself (and stops)";
  Buf<int> out(32);
  expect_failure(run(1, 33, 0, write_past_shared, out.p), "static __shared__");
  expect_failure(run(1, 64, 32 * sizeof(int), write_past_dynamic, out.p, 32),
                 "dynamic shared memory");
  EXPECT_EQ(run(1, 64, 32 * sizeof(int), write_past_dynamic, out.p, 31), cudaSuccess);
  const cudaError_t e = run(1, 64, 0, write_past_global, out.p, 32);
  EXPECT_EQ(e, cudaErrorIllegalAddress);
  EXPECT_NE(message(e).find("outside a device allocation of 128 bytes"), std::string::npos)
      << message(e);
  EXPECT_EQ(run(1, 64, 0, write_past_global, out.p, 31), cudaSuccess);
}

// Far beyond the end: the access faults on the inaccessible page after the
// allocation, and the simulator says which thread of which kernel made it.
__global__ void write_far_past_global(int* out) { out[threadIdx.x * 1024] = 1; }

TEST(SimSelfTest, ReportsFaultingThread) {
  if (SIM_TEST_ASAN) GTEST_SKIP() << "AddressSanitizer reports these itself";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  sim::ScheduleScope forward(sim::Schedule::kForward); // thread 1 faults first
  Buf<int> out(32);
  EXPECT_DEATH((void)run(1, 8, 0, write_far_past_global, out.p),
               "invalid memory access .* by kernel selftest kernel .*block \\(0,0,0\\), thread "
               "\\(1,0,0\\); byte 4096 of a device allocation of 128 bytes");
}

TEST(SimSelfTest, SharedMemoryStartsPoisoned) {
  Buf<float> out(64);
  ASSERT_EQ(run(1, 64, 0, read_unwritten_shared, out.p), cudaSuccess);
  const auto r = out.get();
  for (int t = 0; t < 64; ++t) EXPECT_EQ(std::isnan(r[std::size_t(t)]), t >= 32) << t;
}

// ---- launch configuration ----------------------------------------------------------------------
__global__ void bounded(int* out) {
  sim::detail::launch_bounds(64); // what gen_sim.py puts for __launch_bounds__(64)
  out[threadIdx.x] = 1;
}
__global__ void big_smem(int* out) {
  unsigned char* const sh = static_cast<unsigned char*>(sim::detail::dynamic_shared(16));
  sh[threadIdx.x] = 7;
  __syncthreads();
  out[threadIdx.x] = sh[(threadIdx.x + 1) % blockDim.x];
}

TEST(SimSelfTest, LaunchConfigurationErrors) {
  Buf<int> out(1024);
  EXPECT_EQ(run(1, 64, 0, bounded, out.p), cudaSuccess);
  expect_failure(run(1, 128, 0, bounded, out.p), "__launch_bounds__(64)");
  EXPECT_EQ(run(1, 1025, 0, bounded, out.p), cudaErrorInvalidConfiguration);
  EXPECT_EQ(run(dim3(1, 65536), 32, 0, bounded, out.p), cudaErrorInvalidConfiguration);
  EXPECT_EQ(run(0, 32, 0, bounded, out.p), cudaErrorInvalidConfiguration);
  // More than 48 KiB of dynamic shared memory needs the attribute, at most 227 KiB.
  EXPECT_EQ(run(1, 64, 64 * 1024, big_smem, out.p), cudaErrorInvalidValue);
  EXPECT_EQ(
      sim::cudaFuncSetAttribute(big_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024),
      cudaErrorInvalidValue);
  EXPECT_EQ(
      sim::cudaFuncSetAttribute(big_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
      cudaSuccess);
  EXPECT_EQ(run(1, 64, 64 * 1024, big_smem, out.p), cudaSuccess);
  EXPECT_EQ(out.get()[5], 7);
  // Errors are reported once, like cudaGetLastError.
  (void)run(1, 1025, 0, bounded, out.p);
  EXPECT_EQ(sim::cudaGetLastError(), cudaSuccess);
}

// ---- wmma mock ----------------------------------------------------------------------------------
namespace wmma = nvcuda::wmma;
// D = A B for one 16x16x16 tile, staged through shared memory.
__global__ void wmma_gemm(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, int offset) {
  auto& sa = sim::detail::static_shared<__nv_bfloat16[16 * 16 + 16], 128>([] {});
  auto& sb = sim::detail::static_shared<__nv_bfloat16[16 * 16], 128>([] {});
  auto& sd = sim::detail::static_shared<float[16 * 16], 128>([] {});
  for (int i = int(threadIdx.x); i < 256; i += 32) {
    sa[offset + i] = a[i];
    sb[i] = b[i];
  }
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb; // B^T stored
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, sa + offset, 16);
  wmma::load_matrix_sync(fb, sb, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(sd, fc, 16, wmma::mem_row_major);
  __syncwarp();
  for (int i = int(threadIdx.x); i < 256; i += 32) d[i] = sd[i];
}
// Assumes that lane l holds row l / 2 of the accumulator (not true on the mock).
__global__ void wmma_layout_assumption(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b) {
  auto& sa = sim::detail::static_shared<__nv_bfloat16[256], 128>([] {});
  auto& sb = sim::detail::static_shared<__nv_bfloat16[256], 128>([] {});
  for (int i = int(threadIdx.x); i < 256; i += 32) {
    sa[i] = a[i];
    sb[i] = b[i];
  }
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, sa, 16);
  wmma::load_matrix_sync(fb, sb, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  const int lane = int(threadIdx.x);
  for (int e = 0; e < 8; ++e) d[(lane / 2) * 16 + (lane % 2) * 8 + e] = fc.x[e];
}

TEST(SimSelfTest, WmmaMock) {
  std::vector<__nv_bfloat16> a(256), b(256);
  std::vector<double> want(256, 0.0);
  for (int i = 0; i < 256; ++i) {
    a[std::size_t(i)] = __float2bfloat16_rn(float((i * 7) % 11) - 5.0f);
    b[std::size_t(i)] = __float2bfloat16_rn(float((i * 5) % 13) - 6.0f);
  }
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      for (int k = 0; k < 16; ++k)
        want[std::size_t(r * 16 + c)] += double(__bfloat162float(a[std::size_t(r * 16 + k)])) *
                                         __bfloat162float(b[std::size_t(c * 16 + k)]);
  Buf<__nv_bfloat16> ga(256), gb(256);
  ga.set(a);
  gb.set(b);
  Buf<float> d(256);
  ASSERT_EQ(run(1, 32, 0, wmma_gemm, d.p, ga.p, gb.p, 0), cudaSuccess);
  auto r = d.get();
  for (int i = 0; i < 256; ++i) EXPECT_EQ(double(r[std::size_t(i)]), want[std::size_t(i)]) << i;
  // 16 bf16 elements = 32 bytes: aligned; 8 elements = 16 bytes: not 256-bit aligned.
  EXPECT_EQ(run(1, 32, 0, wmma_gemm, d.p, ga.p, gb.p, 16), cudaSuccess);
  expect_failure(run(1, 32, 0, wmma_gemm, d.p, ga.p, gb.p, 8), "not 32-byte");
  // Code that assumes a fragment layout computes garbage on the scrambled mock.
  ASSERT_EQ(run(1, 32, 0, wmma_layout_assumption, d.p, ga.p, gb.p), cudaSuccess);
  r = d.get();
  int wrong = 0;
  for (int i = 0; i < 256; ++i) wrong += double(r[std::size_t(i)]) != want[std::size_t(i)];
  EXPECT_GT(wrong, 200);
}

} // namespace
