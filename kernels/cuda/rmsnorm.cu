// RMSNorm over the last dimension C (Llama), no bias, eps from the caller,
// fp32 statistics. The same formulas as the CPU reference (kernels/cpu/rmsnorm.cpp):
//   forward : rrms = 1/sqrt(mean(x^2) + eps); out = x*rrms*w; rrms [N] saved.
//             One warp per row, 8 rows per 256-thread block; two passes over
//             the row (sum of squares, write; the 2nd hits L1/L2). 16-byte
//             packs when C is a multiple of the pack and pointers are aligned.
//             bytes: 2*N*C*sizeof(T) + C*sizeof(T) + 4N; FLOPs ~ 4*N*C.
//   apply   : out from saved rrms (recomputation), bit-identical to the
//             forward's output: one warp per row, one pass.
//             bytes: 2*N*C*sizeof(T) + 4N; FLOPs ~ 2*N*C.
//   residual_rmsnorm_forward: r = a + b (rounded to T, stored), then
//             RMSNorm(r). bytes: 4*N*C*sizeof(T); FLOPs ~ 5*N*C.
//   backward: norm_backward.cu.
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr int kFwdThreads = 256;
constexpr int kRowsPerBlock = kFwdThreads / 32;

// out = x * r * w, the one formula of the forward and the recomputation.
template <typename T>
__device__ __forceinline__ void warp_row_scale(T* out, const T* row, const T* w, int C, bool vec,
                                               int lane, float r) {
  if (vec) {
    constexpr int VN = kPack<T>;
    for (int i = lane * VN; i < C; i += 32 * VN) {
      const Vec<T, VN> x = load_vec<VN>(row + i);
      const Vec<T, VN> wv = load_vec<VN>(w + i);
      Vec<T, VN> o;
#pragma unroll
      for (int k = 0; k < VN; ++k) o.v[k] = from_f32<T>(to_f32(x.v[k]) * r * to_f32(wv.v[k]));
      store_vec(out + i, o);
    }
  } else {
    for (int i = lane; i < C; i += 32) out[i] = from_f32<T>(to_f32(row[i]) * r * to_f32(w[i]));
  }
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    rmsnorm_forward_kernel(T* out, float* rrms, const T* inp, const T* w, int N, int C, float eps,
                           bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const T* x = inp + std::size_t(row) * C;
  const float r =
      1.0f / sqrtf(warp_row_sum(x, C, vec, lane, [](float v) { return v * v; }) / float(C) + eps);
  warp_row_scale(out + std::size_t(row) * C, x, w, C, vec, lane, r);
  if (lane == 0 && rrms) rrms[row] = r;
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    rmsnorm_apply_kernel(T* out, const T* inp, const T* w, const float* rrms, int N, int C,
                         bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const std::size_t off = std::size_t(row) * C;
  warp_row_scale(out + off, inp + off, w, C, vec, lane, rrms[row]);
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    residual_rmsnorm_forward_kernel(T* res, T* out, float* rrms, const T* a, const T* b, const T* w,
                                    int N, int C, float eps, bool vec) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= N) return;
  const std::size_t off = std::size_t(row) * C;
  // r = a + b, rounded to T and stored; the sum of squares of the stored values.
  const float ss =
      warp_residual_row(res + off, a + off, b + off, C, vec, lane, [](float v) { return v * v; });
  const float r = 1.0f / sqrtf(ss / float(C) + eps);
  warp_row_scale(out + off, res + off, w, C, vec, lane, r);
  if (lane == 0 && rrms) rrms[row] = r;
}

void check_shape(const char* what, int N, int C, float eps) {
  if (N <= 0 || C <= 0) throw std::invalid_argument(std::string(what) + ": bad shape");
  if (!(eps > 0.0f)) throw std::invalid_argument(std::string(what) + ": eps must be > 0");
}

unsigned fwd_blocks(int N) { return unsigned((N + kRowsPerBlock - 1) / kRowsPerBlock); }

} // namespace

template <typename T>
void rmsnorm_forward(T* out, float* rrms, const T* inp, const T* weight, int N, int C, float eps,
                     cudaStream_t s) {
  check_shape("rmsnorm_forward", N, C, eps);
  const bool vec = rows_vectorisable<T>(C, {out, inp, weight});
  rmsnorm_forward_kernel<T>
      <<<fwd_blocks(N), kFwdThreads, 0, s>>>(out, rrms, inp, weight, N, C, eps, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void rmsnorm_apply(T* out, const T* inp, const T* weight, const float* rrms, int N, int C,
                   cudaStream_t s) {
  check_shape("rmsnorm_apply", N, C, 1.0f);
  if (!rrms) throw std::invalid_argument("rmsnorm_apply: null rrms");
  const bool vec = rows_vectorisable<T>(C, {out, inp, weight});
  rmsnorm_apply_kernel<T><<<fwd_blocks(N), kFwdThreads, 0, s>>>(out, inp, weight, rrms, N, C, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void residual_rmsnorm_forward(T* residual, T* out, float* rrms, const T* a, const T* b,
                              const T* weight, int N, int C, float eps, cudaStream_t s) {
  check_shape("residual_rmsnorm_forward", N, C, eps);
  const bool vec = rows_vectorisable<T>(C, {residual, out, a, b, weight});
  residual_rmsnorm_forward_kernel<T>
      <<<fwd_blocks(N), kFwdThreads, 0, s>>>(residual, out, rrms, a, b, weight, N, C, eps, vec);
  MYELIN_CUDA_CHECK_LAUNCH();
}

#define MYELIN_INST(T)                                                                             \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, int, int, float, cudaStream_t); \
  template void rmsnorm_apply<T>(T*, const T*, const T*, const float*, int, int, cudaStream_t);    \
  template void residual_rmsnorm_forward<T>(T*, T*, float*, const T*, const T*, const T*, int,     \
                                            int, float, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
