// AdamW with fp32 master weights and moments (decoupled weight decay, bias
// corrected):  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//              p -= lr * (m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps) + wd * p)
// For bf16 storage the updated master is written to params rounded to nearest,
// or stochastically (seed != 0; hash of (seed, index_base + index), so
// reproducible and independent across tensors).
//   bytes per element: 4 fp32 reads (g, m, v, master) + 3 fp32 writes = 28; bf16
//   storage adds a 2-byte params write. FLOPs ~ 15 per element. The step's
//   scalars come by value or, for a captured update, from device memory.
//   launch: grid-stride, 256 threads.
#include <cmath>
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

__device__ __forceinline__ std::uint32_t mix(std::uint32_t seed, std::uint64_t i) {
  std::uint64_t z = (std::uint64_t(seed) << 32) ^ i;
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return std::uint32_t(z);
}

template <typename T>
__device__ __forceinline__ T round_param(float p, std::uint32_t seed, std::uint64_t i) {
  if constexpr (std::is_same<T, float>::value) {
    return p;
  } else {
    if (seed == 0 || !isfinite(p)) return __float2bfloat16_rn(p);
    // Add 16 random bits below the bf16 mantissa, then truncate.
    const std::uint32_t bits = __float_as_uint(p) + (mix(seed, i) & 0xffffu);
    return __float2bfloat16_rz(__uint_as_float(bits & 0xffff0000u));
  }
}

template <typename T>
__global__ void adamw_kernel(T* params, float* master, const float* grads, float* m, float* v,
                             std::size_t n, AdamWScalars sc, const AdamWScalars* dsc, float b1,
                             float b2, float eps, float wd, std::uint64_t base) {
  if (dsc) sc = *dsc;
  const float lr = sc.lr, c1 = sc.c1, c2 = sc.c2;
  const std::uint32_t seed = sc.seed;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const float g = grads[i];
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    const float mhat = mi * c1, vhat = vi * c2; // c = 1 / (1 - beta^t)
    float p = master ? master[i] : to_f32(params[i]);
    p -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p);
    m[i] = mi;
    v[i] = vi;
    if (master) master[i] = p;
    params[i] = round_param<T>(p, seed, base + i);
  }
}

} // namespace

template <typename T>
void adamw_update(T* params, float* master, const float* grads, float* m, float* v, std::size_t n,
                  const AdamWArgs& a, cudaStream_t s) {
  if (a.t < 1) throw std::invalid_argument("adamw_update: step t must be >= 1");
  if (!std::is_same<T, float>::value && !master)
    throw std::invalid_argument("adamw_update: bf16 params need an fp32 master copy");
  if (n == 0) return;
  adamw_kernel<T><<<grid_for(n, 256), 256, 0, s>>>(
      params, master, grads, m, v, n, a.scalars ? AdamWScalars{} : adamw_scalars(a), a.scalars,
      a.beta1, a.beta2, a.eps, a.weight_decay, a.index_base);
  MYELIN_CUDA_CHECK_LAUNCH();
}

AdamWScalars adamw_scalars(const AdamWArgs& a) {
  // Bias corrections as reciprocals computed in double, like the CPU backend.
  return {a.lr, float(1.0 / (1.0 - std::pow(double(a.beta1), a.t))),
          float(1.0 / (1.0 - std::pow(double(a.beta2), a.t))), a.seed};
}

template void adamw_update<float>(float*, float*, const float*, float*, float*, std::size_t,
                                  const AdamWArgs&, cudaStream_t);
template void adamw_update<bf16>(bf16*, float*, const float*, float*, float*, std::size_t,
                                 const AdamWArgs&, cudaStream_t);

} // namespace myelin::cuda
