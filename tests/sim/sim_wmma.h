// CPU simulation of CUDA kernels: a mock of nvcuda::wmma (the 16x16x16 shape,
// bf16 or fp16 operands, fp32 accumulators), replacing <mma.h> in the files
// gen_sim.py generates. SIMULATION ONLY, see sim_runtime.h.
//
// * Fragment layouts are deliberately scrambled: which (row, column) of the
//   16x16 tile a lane's element x[e] holds is a fixed pseudo-random permutation,
//   different for matrix_a / matrix_b (per layout) and the accumulator. Code
//   that assumes a particular hardware layout gives wrong results here; code
//   that learns the layout at run time (e.g. by loading an index matrix) works.
// * Every *_sync call is a warp collective (all 32 lanes, checked): the lanes
//   must pass the same pointer, ldm and layout; pointers must be 32-byte (256-bit)
//   aligned and ldm a multiple of 16 bytes, as the CUDA programming guide
//   requires; the 16x16 footprint must lie in shared memory of the block or in
//   a device allocation. As documented, load/store/mma wait until all lanes
//   have arrived; a store's values are visible to other lanes only after a
//   further __syncwarp (the lanes store their own elements after the wait).
// * mma_sync: exact products, fp32 sums in a fixed order (real tensor cores
//   sum in an unspecified order with their own internal precision).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "sim_device.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace sim_detail {
// Permutation p of [0, 256): lane l's element e is tile position p[8l + e]
// (row p / 16, column p % 16). which: 0 a/row, 1 a/col, 2 b/row, 3 b/col, 4 accumulator.
const std::uint8_t* perm(int which);
template <typename Use, typename Layout> constexpr int which() {
  if constexpr (std::is_same_v<Use, accumulator>)
    return 4;
  else
    return (std::is_same_v<Use, matrix_a> ? 0 : 2) + (std::is_same_v<Layout, col_major> ? 1 : 0);
}
// Collective prologue: records (p, ldm, layout) of this lane, waits for the warp,
// then checks that all lanes agree, the alignment, ldm and the footprint.
void collective(sim::detail::Op op, const void* p, unsigned ldm, int layout, int elem_bytes,
                const sim::detail::Loc& loc);
inline float to_float(float x) { return x; }
inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float to_float(__half x) { return __half2float(x); }
} // namespace sim_detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void> class fragment {
  static_assert(M == 16 && N == 16 && K == 16, "sim_wmma: only the 16x16x16 shape is simulated");
  static_assert(std::is_same_v<Use, accumulator>
                    ? std::is_same_v<T, float>
                    : (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>),
                "sim_wmma: bf16/fp16 operands and fp32 accumulators only");

 public:
  static constexpr int num_elements = 8;
  T x[num_elements];
};

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm,
                      const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads need a layout_t");
  sim_detail::collective(sim::detail::Op::kWmmaLoad, p, ldm, -1, int(sizeof(T)), loc);
  const std::uint8_t* pm = sim_detail::perm(sim_detail::which<Use, Layout>());
  const int lane = sim::detail::t_ctx->lane;
  for (int e = 0; e < 8; ++e) {
    const int pos = pm[lane * 8 + e], r = pos / 16, c = pos % 16;
    f.x[e] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
  }
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t layout,
                             const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim_detail::collective(sim::detail::Op::kWmmaLoad, p, ldm, int(layout), 4, loc);
  const std::uint8_t* pm = sim_detail::perm(4);
  const int lane = sim::detail::t_ctx->lane;
  for (int e = 0; e < 8; ++e) {
    const int pos = pm[lane * 8 + e], r = pos / 16, c = pos % 16;
    f.x[e] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout,
                              const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  sim_detail::collective(sim::detail::Op::kWmmaStore, p, ldm, int(layout), 4, loc);
  const std::uint8_t* pm = sim_detail::perm(4);
  const int lane = sim::detail::t_ctx->lane;
  for (int e = 0; e < 8; ++e) {
    const int pos = pm[lane * 8 + e], r = pos / 16, c = pos % 16;
    (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[e];
  }
}

template <typename Use, typename T, typename Layout, typename V>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, const V& v) {
  for (int e = 0; e < 8; ++e) f.x[e] = T(v);
}

// d = a * b + c (d may be c).
template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c,
              const sim::detail::Loc& loc = sim::detail::Loc::current()) {
  const int lane = sim::detail::t_ctx->lane;
  sim::detail::WarpExchange& ex = sim::detail::warp_exchange();
  const std::uint8_t* pa = sim_detail::perm(sim_detail::which<matrix_a, LA>());
  const std::uint8_t* pb = sim_detail::perm(sim_detail::which<matrix_b, LB>());
  const std::uint8_t* pc = sim_detail::perm(4);
  for (int e = 0; e < 8; ++e) {
    ex.a[pa[lane * 8 + e]] = sim_detail::to_float(a.x[e]);
    ex.b[pb[lane * 8 + e]] = sim_detail::to_float(b.x[e]);
    ex.c[pc[lane * 8 + e]] = c.x[e];
  }
  sim::detail::warp_arrive(sim::detail::Op::kWmmaMma, 0xffffffffu, loc);
  for (int e = 0; e < 8; ++e) {
    const int pos = pc[lane * 8 + e], r = pos / 16, col = pos % 16;
    float s = ex.c[pos];
    for (int k = 0; k < 16; ++k) s += ex.a[r * 16 + k] * ex.b[k * 16 + col];
    d.x[e] = s;
  }
}

} // namespace nvcuda::wmma
