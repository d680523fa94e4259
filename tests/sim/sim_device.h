// CPU simulation of CUDA kernels: what device code sees (included first by
// every file that gen_sim.py generates from kernels/cuda/*.cu, and by tests
// that write their own small kernels). See sim_runtime.h for what is and is
// not simulated.
//
// Provides: threadIdx, blockIdx, blockDim, gridDim, warpSize; __syncthreads,
// __syncwarp; __shfl_sync, __shfl_xor_sync, __shfl_up_sync, __shfl_down_sync
// for 4- and 8-byte types (full-warp masks only); the device intrinsics that
// the host headers do not declare (__expf, rsqrtf, __float_as_uint, ...); the
// storage behind the rewritten shared-memory declarations and __launch_bounds__.
// Every synchronisation takes the caller's source location for error messages
// (gen_sim.py keeps the .cu file's line numbers with #line).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

#include "sim_runtime.h"

namespace sim::detail {

// The CUDA thread that is running on this host thread.
struct ThreadCtx {
  uint3 tid, bid;
  dim3 bdim, gdim;
  int lane, warp;
};
inline thread_local ThreadCtx* t_ctx = nullptr;

using Loc = std::source_location;
enum class Op : std::uint8_t {
  kSyncwarp,
  kShflIdx,
  kShflXor,
  kShflUp,
  kShflDown,
  kWmmaLoad,
  kWmmaStore,
  kWmmaMma,
  kMma,      // mma.sync (sim_ptx.h)
  kLdmatrix, // ldmatrix.sync (sim_ptx.h)
};
const char* op_name(Op op);

void syncthreads(const Loc& loc);
// Arrives at a warp collective and returns when all 32 lanes have arrived.
// `slot` (may be null) receives the address of this collective's exchange area.
struct WarpExchange {
  std::uint64_t val[32];
  const void* ptr[32];
  unsigned ldm[32];
  int layout[32];
  float a[256], b[256],
      c[256];                // wmma operands, 16x16 row-major (mma.sync: A 16x16, B 16x8, C 16x8)
  std::uint32_t frag[32][4]; // ldmatrix: each lane's result registers
  bool gathered;             // ldmatrix: frag filled by the first lane to resume
};
WarpExchange& warp_exchange();
void warp_arrive(Op op, unsigned mask, const Loc& loc);
// Reports a violation of the CUDA programming model by the current thread and
// abandons the block (the launch then fails with this message). It never
// returns: arguments must not be temporaries with destructors (they would leak).
[[noreturn]] void fail(const Loc& loc, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// Throws nothing; for checks on pointers that device code passes to collectives.
bool in_known_memory(const void* p, std::size_t bytes);

void* dynamic_shared(std::size_t align, const Loc& loc = Loc::current());
void* static_shared(const void* key, std::size_t bytes, std::size_t align, const Loc& loc);
template <typename T, std::size_t Align, typename Tag>
T& static_shared(Tag, const Loc& loc = Loc::current()) {
  static const char key = 0; // one per declaration and template instantiation (Tag is a lambda)
  constexpr std::size_t a = Align > alignof(T) ? Align : alignof(T);
  return *static_cast<T*>(static_shared(&key, sizeof(T), a, loc));
}
void launch_bounds(long long max_threads, const Loc& loc = Loc::current());
// True if [p, p + bytes) lies in the current block's shared memory.
bool in_block_shared(const void* p, std::size_t bytes);

// Asynchronous copies (cp.async, sim_ptx.h) of the current thread. async_copy
// checks the operands, fills the destination with poison (0xFF bytes) at once
// and queues the copy; it lands (src_bytes copied, the rest of `bytes` zeroed)
// only when a wait covers its group: async_wait(n) lands every committed group
// but the n most recent; async_wait_all() commits and lands everything. A thread
// that exits with copies in flight fails the launch.
void async_copy(void* dst, const void* src, std::size_t bytes, std::size_t src_bytes,
                const Loc& loc);
void async_commit();
void async_wait(int n, const Loc& loc);
void async_wait_all();

template <typename T> std::uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> &&
                    (sizeof(T) == 4 || sizeof(T) == 8 || sizeof(T) == 2),
                "shuffles of 2-, 4- and 8-byte types only");
  std::uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T> T from_bits(std::uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}
// The source lane of a shuffle (own lane when out of the lane's segment), as the
// CUDA programming guide defines it for each variant.
int shfl_source(Op op, int lane, int arg, int width, const Loc& loc);

template <typename T> T shfl(Op op, unsigned mask, T v, int arg, int width, const Loc& loc) {
  const int lane = t_ctx->lane;
  WarpExchange& ex = warp_exchange();
  ex.val[lane] = to_bits(v);
  warp_arrive(op, mask, loc);
  return from_bits<T>(ex.val[shfl_source(op, lane, arg, width, loc)]);
}

} // namespace sim::detail

// ---- built-in variables ----------------------------------------------------------------------
#define threadIdx (::sim::detail::t_ctx->tid)
#define blockIdx (::sim::detail::t_ctx->bid)
#define blockDim (::sim::detail::t_ctx->bdim)
#define gridDim (::sim::detail::t_ctx->gdim)
#ifndef warpSize
#define warpSize 32
#endif

// ---- synchronisation -------------------------------------------------------------------------
inline void __syncthreads(const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim::detail::syncthreads(loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim::detail::warp_arrive(sim::detail::Op::kSyncwarp, mask, loc);
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32,
              const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  return sim::detail::shfl(sim::detail::Op::kShflIdx, mask, v, src, width, loc);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                  const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  return sim::detail::shfl(sim::detail::Op::kShflXor, mask, v, lane_mask, width, loc);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,
                 const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  return sim::detail::shfl(sim::detail::Op::kShflUp, mask, v, int(delta), width, loc);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                   const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  return sim::detail::shfl(sim::detail::Op::kShflDown, mask, v, int(delta), width, loc);
}

// ---- device intrinsics without a host declaration in the CUDA headers --------------------------
// Math: the host libm (the GPU's fast intrinsics are less accurate; the tests'
// tolerances cover either).
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;
// CUDA's integer min/max device functions (global, as in CUDA's math headers).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
// Bit casts.
inline unsigned __float_as_uint(float x) {
  return sim::detail::from_bits<unsigned>(sim::detail::to_bits(x));
}
inline float __uint_as_float(unsigned x) {
  return sim::detail::from_bits<float>(sim::detail::to_bits(x));
}
inline int __float_as_int(float x) { return sim::detail::from_bits<int>(sim::detail::to_bits(x)); }
inline float __int_as_float(int x) {
  return sim::detail::from_bits<float>(sim::detail::to_bits(x));
}
inline long long __double_as_longlong(double x) {
  return sim::detail::from_bits<long long>(sim::detail::to_bits(x));
}
inline double __longlong_as_double(long long x) {
  return sim::detail::from_bits<double>(sim::detail::to_bits(x));
}
// Integer bit operations.
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
