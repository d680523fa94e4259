#include "tests/gpu/gpu_test.h"

#include <stdexcept>
#include <string>

namespace myelin::gpu_test {

bool have_device() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); // clear
    return false;
  }
  return n > 0;
}

namespace {

__device__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void slow_fill_kernel(float* p, std::size_t n, float v, unsigned long long ns,
                                 const volatile int* release) {
  const unsigned long long end = global_ns() + ns;
  while (global_ns() < end && (release == nullptr || *release == 0)) {
  }
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

} // namespace

void slow_fill(float* p, std::size_t n, float v, double seconds, const volatile int* release,
               cudaStream_t s) {
  slow_fill_kernel<<<64, 256, 0, s>>>(p, n, v, static_cast<unsigned long long>(seconds * 1e9),
                                      release);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("slow_fill: ") + cudaGetErrorString(e));
}

} // namespace myelin::gpu_test
