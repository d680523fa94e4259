// Helpers of the GPU tests (tests/gpu): whether a CUDA device is present (each
// test then skips with "skipped: no CUDA device", which CTest counts as
// skipped), and a kernel that holds a stream busy before it writes a buffer,
// for checks that work queued on one stream is waited for on another.
// REQUIRE_GPU() needs GoogleTest, which the including test provides.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace myelin::gpu_test {

// True when at least one CUDA device is visible (clears the error otherwise).
bool have_device();

// Queues on `s` a kernel that busy-waits `seconds` of GPU time, or less when
// `release` (a host-mapped int, may be null) becomes non-zero, and then sets
// p[0 .. n) to v.
void slow_fill(float* p, std::size_t n, float v, double seconds, const volatile int* release,
               cudaStream_t s);

} // namespace myelin::gpu_test

#define REQUIRE_GPU()                                                                              \
  do {                                                                                             \
    if (!::myelin::gpu_test::have_device()) GTEST_SKIP() << "skipped: no CUDA device";             \
  } while (0)
