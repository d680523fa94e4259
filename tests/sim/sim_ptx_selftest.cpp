// Self-tests of the simulator's inline-PTX replacements (sim_ptx.h): ldmatrix
// and mma.sync follow the fragment layouts of the PTX ISA (checked element by
// element against the documented formulas, written out here independently),
// and cp.async copies land only at cp.async.wait_group / wait_all, so that a
// missing or too weak wait gives wrong results or a failed launch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "sim_device.h"
#include "sim_ptx.h"
#include "sim_runtime.h"
#include "sim_selftest.h"

namespace {

namespace ptx = myelin::cuda::ptx;

using sim::selftest::Buf;
using sim::selftest::run;

// ---- ldmatrix ----------------------------------------------------------------------------------
constexpr int kStride = 24; // row stride of the shared tiles (elements; 48 bytes)

// Four 8x8 matrices of 16-bit values v = 64 i + 8 r + c in shared memory (matrix
// i row r at row 8i + r); every lane loads with `num` matrices, (trans), and
// writes its registers to out[lane][0..num).
template <int N, bool Trans> __global__ void ldm_kernel(std::uint32_t* out) {
  std::uint16_t* const sh = static_cast<std::uint16_t*>(sim::detail::dynamic_shared(16));
  const int lane = int(threadIdx.x);
  for (int k = lane; k < 32 * 8; k += 32) {
    const int row = k / 8, c = k % 8;
    sh[row * kStride + c] = std::uint16_t(64 * (row / 8) + 8 * (row % 8) + c);
  }
  __syncwarp();
  // Lanes past 8*N pass an address that is not valid: ldmatrix must ignore it.
  const void* row = lane < 8 * N ? static_cast<const void*>(sh + lane * kStride) : nullptr;
  std::uint32_t r[N];
  if constexpr (N == 1) {
    if (Trans)
      ptx::ldmatrix_x1_trans(r, row);
    else
      ptx::ldmatrix_x1(r, row);
  } else if constexpr (N == 2) {
    if (Trans)
      ptx::ldmatrix_x2_trans(r, row);
    else
      ptx::ldmatrix_x2(r, row);
  } else {
    if (Trans)
      ptx::ldmatrix_x4_trans(r, row);
    else
      ptx::ldmatrix_x4(r, row);
  }
  for (int i = 0; i < N; ++i) out[lane * 4 + i] = r[i];
}

template <int N, bool Trans> void check_ldmatrix() {
  Buf<std::uint32_t> out(32 * 4);
  ASSERT_EQ(run(1, 32, 32 * kStride * 2, ldm_kernel<N, Trans>, out.p), cudaSuccess)
      << sim::cudaGetErrorString(cudaErrorUnknown);
  const auto r = out.get();
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < N; ++i) {
      // PTX ISA: thread l holds row l/4, elements 2(l%4) and 2(l%4)+1 of each
      // matrix; with .trans the matrix is transposed on the way.
      const unsigned lo = Trans ? 64 * i + 8 * (2 * t) + g : 64 * i + 8 * g + 2 * t;
      const unsigned hi = Trans ? 64 * i + 8 * (2 * t + 1) + g : lo + 1;
      EXPECT_EQ(r[std::size_t(l * 4 + i)], lo | (hi << 16))
          << "ldmatrix x" << N << (Trans ? ".trans" : "") << " lane " << l << " reg " << i;
    }
  }
}

TEST(SimPtx, LdmatrixLayouts) {
  check_ldmatrix<1, false>();
  check_ldmatrix<2, false>();
  check_ldmatrix<4, false>();
  check_ldmatrix<1, true>();
  check_ldmatrix<2, true>();
  check_ldmatrix<4, true>();
}

__global__ void ldm_misaligned(std::uint32_t* out) {
  std::uint16_t* const sh = static_cast<std::uint16_t*>(sim::detail::dynamic_shared(16));
  std::uint32_t r[4];
  ptx::ldmatrix_x4(r, sh + int(threadIdx.x) * kStride + 4); // 8-byte aligned rows
  out[threadIdx.x] = r[0];
}
__global__ void ldm_global(std::uint32_t* out) {
  std::uint32_t r[4];
  ptx::ldmatrix_x4(r, out + 4 * int(threadIdx.x)); // device memory, not shared
  out[threadIdx.x] = r[0];
}

TEST(SimPtx, LdmatrixChecksAddresses) {
  Buf<std::uint32_t> out(32 * 4);
  cudaError_t e = run(1, 32, 32 * kStride * 2, ldm_misaligned, out.p);
  EXPECT_NE(e, cudaSuccess);
  EXPECT_NE(std::string(sim::cudaGetErrorString(e)).find("16-byte aligned"), std::string::npos)
      << sim::cudaGetErrorString(e);
  e = run(1, 32, 0, ldm_global, out.p);
  EXPECT_NE(e, cudaSuccess);
  EXPECT_NE(std::string(sim::cudaGetErrorString(e)).find("shared memory"), std::string::npos)
      << sim::cudaGetErrorString(e);
}

// ---- mma.sync m16n8k16 -------------------------------------------------------------------------
std::uint32_t bf16_pair(float lo, float hi) { // exact for the small integers used here
  std::uint32_t a, b;
  std::memcpy(&a, &lo, 4);
  std::memcpy(&b, &hi, 4);
  return (a >> 16) | (b & 0xffff0000u);
}

// A [16][16], B [16][8] (row-major, k x n), C [16][8] -> D [16][8], fragments
// built by the documented layout from global memory.
__global__ void mma_kernel(float* D, const float* A, const float* B, const float* C) {
  const int l = int(threadIdx.x), g = l / 4, t = l % 4;
  const std::uint32_t a[4] = {bf16_pair(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]),
                              bf16_pair(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                              bf16_pair(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                              bf16_pair(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
  const std::uint32_t b0 = bf16_pair(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
  const std::uint32_t b1 = bf16_pair(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
  float d[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t],
                C[(g + 8) * 8 + 2 * t + 1]};
  ptx::mma_bf16_16816(d, a, b0, b1);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

TEST(SimPtx, MmaM16N8K16Layout) {
  Buf<float> A(256), B(128), C(128), D(128);
  std::vector<float> a(256), b(128), c(128);
  for (int i = 0; i < 256; ++i) a[std::size_t(i)] = float((i * 7) % 13 - 6);
  for (int i = 0; i < 128; ++i) b[std::size_t(i)] = float((i * 5) % 11 - 5);
  for (int i = 0; i < 128; ++i) c[std::size_t(i)] = float(i % 9);
  A.set(a);
  B.set(b);
  C.set(c);
  ASSERT_EQ(run(1, 32, 0, mma_kernel, D.p, A.p, B.p, C.p), cudaSuccess);
  const auto d = D.get();
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      float want = c[std::size_t(r * 8 + n)];
      for (int k = 0; k < 16; ++k) want += a[std::size_t(r * 16 + k)] * b[std::size_t(k * 8 + n)];
      EXPECT_EQ(d[std::size_t(r * 8 + n)], want) << "D[" << r << "][" << n << "]";
    }
}

// ---- cp.async ----------------------------------------------------------------------------------
// Each of 32 threads copies 16 bytes (4 floats) of two 128-float tiles into
// shared memory as two commit groups, then reads tile `which` back after a
// wait that leaves `wait_n` groups pending and a barrier. Threads with
// zero_fill set copy with src-size 0 (zeros).
constexpr int kTile = 128;
template <int WaitN>
__global__ void cp_kernel(float* out, const float* in, int which, bool zero_fill) {
  float* const sh = static_cast<float*>(sim::detail::dynamic_shared(16));
  const int t = int(threadIdx.x);
  for (int tile = 0; tile < 2; ++tile) {
    ptx::cp_async_cg16(sh + tile * kTile + 4 * t, in + tile * kTile + 4 * t, zero_fill ? 0u : 16u);
    ptx::cp_async_commit();
  }
  ptx::cp_async_wait_group<WaitN>();
  __syncthreads();
  for (int k = 0; k < 4; ++k) out[4 * t + k] = sh[which * kTile + 4 * t + k];
  ptx::cp_async_wait_all(); // nothing left in flight at exit
}
// Issues copies and never waits.
__global__ void cp_no_wait(float* out, const float* in) {
  float* const sh = static_cast<float*>(sim::detail::dynamic_shared(16));
  const int t = int(threadIdx.x);
  ptx::cp_async_ca16(sh + 4 * t, in + 4 * t, 16u);
  ptx::cp_async_commit();
  __syncthreads();
  for (int k = 0; k < 4; ++k) out[4 * t + k] = sh[4 * t + k];
}
// Uncommitted copies: wait_all commits and lands them.
__global__ void cp_wait_all(float* out, const float* in) {
  float* const sh = static_cast<float*>(sim::detail::dynamic_shared(16));
  const int t = int(threadIdx.x);
  ptx::cp_async_ca16(sh + 4 * t, in + 4 * t, 16u);
  ptx::cp_async_wait_all();
  __syncthreads();
  for (int k = 0; k < 4; ++k) out[4 * t + k] = sh[(4 * t + 64) % kTile + k];
}

TEST(SimPtx, CpAsyncLandsOnlyAtWait) {
  Buf<float> in(2 * kTile), out(kTile);
  std::vector<float> x(2 * kTile);
  for (int i = 0; i < 2 * kTile; ++i) x[std::size_t(i)] = float(i + 1);
  in.set(x);
  const std::size_t smem = 2 * kTile * sizeof(float);
  auto expect_tile = [&](int tile, const char* what) {
    const auto r = out.get();
    for (int i = 0; i < kTile; ++i)
      ASSERT_EQ(r[std::size_t(i)], x[std::size_t(tile * kTile + i)]) << what << " element " << i;
  };
  auto expect_nan = [&](const char* what) {
    const auto r = out.get();
    for (int i = 0; i < kTile; ++i) ASSERT_TRUE(std::isnan(r[std::size_t(i)])) << what << " " << i;
  };

  // Correct waits.
  ASSERT_EQ(run(1, 32, smem, cp_kernel<0>, out.p, in.p, 1, false), cudaSuccess);
  expect_tile(1, "wait_group 0, tile 1");
  ASSERT_EQ(run(1, 32, smem, cp_kernel<1>, out.p, in.p, 0, false), cudaSuccess);
  expect_tile(0, "wait_group 1, older tile 0");
  // The double-buffering bug: wait_group 1 leaves the newest group in flight;
  // reading it gives the poison (NaN), under every schedule.
  for (sim::Schedule s : {sim::Schedule::kForward, sim::Schedule::kReverse}) {
    sim::ScheduleScope scope(s);
    ASSERT_EQ(run(1, 32, smem, cp_kernel<1>, out.p, in.p, 1, false), cudaSuccess);
    expect_nan("tile 1 read after wait_group 1");
  }
  // Zero fill (src-size 0).
  ASSERT_EQ(run(1, 32, smem, cp_kernel<0>, out.p, in.p, 0, true), cudaSuccess);
  for (float v : out.get()) ASSERT_EQ(v, 0.0f);
  // wait_all lands copies not yet committed.
  ASSERT_EQ(run(1, 32, smem, cp_wait_all, out.p, in.p), cudaSuccess);
  const auto r = out.get();
  for (int t = 0; t < 32; ++t)
    for (int k = 0; k < 4; ++k)
      ASSERT_EQ(r[std::size_t(4 * t + k)], x[std::size_t((4 * t + 64) % kTile + k)]);

  // No wait at all: the reads see poison and the launch fails naming cp.async
  // (when the first thread exits; threads not run by then leave out at 0).
  sim::cudaMemset(out.p, 0, kTile * sizeof(float));
  const cudaError_t e = run(1, 32, smem, cp_no_wait, out.p, in.p);
  EXPECT_NE(e, cudaSuccess);
  const std::string msg = sim::cudaGetErrorString(e);
  EXPECT_NE(msg.find("cp.async copies never waited for"), std::string::npos) << msg;
  int nan = 0;
  for (float v : out.get()) {
    EXPECT_TRUE(v == 0.0f || std::isnan(v)) << v;
    nan += std::isnan(v) ? 1 : 0;
  }
  EXPECT_GE(nan, 4);
}

__global__ void cp_bad(float* out, const float* in, int mode) {
  float* const sh = static_cast<float*>(sim::detail::dynamic_shared(16));
  if (mode == 0) ptx::cp_async_cg16(sh + 1, in, 16u); // misaligned destination
  if (mode == 1) ptx::cp_async_cg16(out, in, 16u);    // destination not shared
  if (mode == 2) ptx::cp_async_cg16(sh, in + 1, 16u); // misaligned source
  ptx::cp_async_wait_all();
}

TEST(SimPtx, CpAsyncChecksOperands) {
  Buf<float> in(64), out(64);
  for (int mode = 0; mode < 3; ++mode) {
    const cudaError_t e = run(1, 32, 256, cp_bad, out.p, in.p, mode);
    EXPECT_NE(e, cudaSuccess) << mode;
    EXPECT_NE(std::string(sim::cudaGetErrorString(e)).find("cp.async"), std::string::npos)
        << sim::cudaGetErrorString(e);
  }
}

} // namespace
