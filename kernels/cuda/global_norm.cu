// Global gradient norm helpers.
//   sum_squares: out = sum x^2 in double. Stage 1: kSumSquaresBlocks (1024)
//     blocks x 256 threads, grid-stride with a fixed stride, per-thread double
//     accumulation, fixed tree reduction in shared memory -> partials. Stage 2:
//     one block of 1024 threads, fixed tree over the partials. The partition
//     depends only on n: the result is bit-identical across runs and GPUs.
//     bytes: n*sizeof(T); FLOPs: 2n (double).
//   scale_inplace: x *= s. bytes 2n*sizeof(T); grid-stride, 16-byte packs.
//   clip_by_norm: x *= max/norm when norm = sqrt(*sumsq) > max, the norm read
//     on the device (no host round trip). bytes 2n*4; grid-stride, 16-byte packs.
//   sum_in_order: *out (+)= sum of k doubles in index order; one thread.
//   accumulate_mean_loss: *acc += float(sum losses / N); one block of 256
//     threads, per-thread double sums over a fixed stride, fixed tree. bytes 4N.
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr int kThreads = 256;

template <int N> __device__ __forceinline__ double block_tree_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
#pragma unroll
  for (int o = N / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  return sh[0];
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sumsq_partial_kernel(double* partial, const T* x, std::size_t n) {
  __shared__ double sh[kThreads];
  double acc = 0.0;
  const std::size_t stride = std::size_t(kSumSquaresBlocks) * kThreads;
  for (std::size_t i = std::size_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const double v = to_f32(x[i]);
    acc += v * v;
  }
  const double s = block_tree_sum<kThreads>(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kSumSquaresBlocks)
    sumsq_final_kernel(double* out, const double* partial) {
  __shared__ double sh[kSumSquaresBlocks];
  const double s = block_tree_sum<kSumSquaresBlocks>(partial[threadIdx.x], sh);
  if (threadIdx.x == 0) *out = s;
}

template <typename T> struct Scale {
  T* x;
  float s;
  template <int W> __device__ void apply(std::size_t i) const {
    Vec<T, W> v = load_vec<W>(x + i);
#pragma unroll
    for (int k = 0; k < W; ++k) v.v[k] = from_f32<T>(to_f32(v.v[k]) * s);
    store_vec(x + i, v);
  }
};

// One thread: the same additions, in the same order, as a host loop.
__global__ void sum_in_order_kernel(double* out, const double* parts, int k, bool accumulate) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double s = accumulate ? *out : 0.0;
  for (int i = 0; i < k; ++i) s += parts[i];
  *out = s;
}

struct ClipByNorm {
  float* x;
  const double* sumsq;
  float max_norm;
  template <int W> __device__ void apply(std::size_t i) const {
    const float norm = float(sqrt(*sumsq));
    if (!(max_norm > 0.0f && norm > max_norm)) return;
    const float s = max_norm / norm;
    Vec<float, W> v = load_vec<W>(x + i);
#pragma unroll
    for (int k = 0; k < W; ++k) v.v[k] *= s;
    store_vec(x + i, v);
  }
};

__global__ void __launch_bounds__(kThreads)
    mean_loss_kernel(double* acc, const float* losses, int n) {
  __shared__ double sh[kThreads];
  double s = 0.0;
  for (int i = int(threadIdx.x); i < n; i += kThreads) s += double(losses[i]);
  const double total = block_tree_sum<kThreads>(s, sh);
  if (threadIdx.x == 0) *acc += double(float(total / n));
}

} // namespace

void sum_in_order(double* out, const double* parts, int k, bool accumulate, cudaStream_t s) {
  sum_in_order_kernel<<<1, 32, 0, s>>>(out, parts, k, accumulate);
  MYELIN_CUDA_CHECK_LAUNCH();
}

void clip_by_norm(float* x, std::size_t n, const double* sumsq, float max_norm, cudaStream_t s) {
  if (n == 0 || !(max_norm > 0.0f)) return;
  launch_elementwise<float>(n, aligned16(x), ClipByNorm{x, sumsq, max_norm}, s);
}

void accumulate_mean_loss(double* acc, const float* losses, int N, cudaStream_t s) {
  if (N <= 0) throw std::invalid_argument("accumulate_mean_loss: N must be positive");
  mean_loss_kernel<<<1, kThreads, 0, s>>>(acc, losses, N);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void sum_squares(double* out, const T* x, std::size_t n, double* scratch, cudaStream_t s) {
  sumsq_partial_kernel<T><<<kSumSquaresBlocks, kThreads, 0, s>>>(scratch, x, n);
  MYELIN_CUDA_CHECK_LAUNCH();
  sumsq_final_kernel<<<1, kSumSquaresBlocks, 0, s>>>(out, scratch);
  MYELIN_CUDA_CHECK_LAUNCH();
}

template <typename T> void scale_inplace(T* x, std::size_t n, float scale, cudaStream_t s) {
  launch_elementwise<T>(n, aligned16(x), Scale<T>{x, scale}, s);
}

template void sum_squares<float>(double*, const float*, std::size_t, double*, cudaStream_t);
template void sum_squares<bf16>(double*, const bf16*, std::size_t, double*, cudaStream_t);
template void scale_inplace<float>(float*, std::size_t, float, cudaStream_t);
template void scale_inplace<bf16>(bf16*, std::size_t, float, cudaStream_t);

} // namespace myelin::cuda
