// What the simulator's self-tests (sim_selftest.cpp, sim_ptx_selftest.cpp)
// share: run() launches a test kernel and returns the launch's error (cleared
// before), naming the test's own file and line as the launch site in the
// simulator's reports; Buf<T> is a zeroed device buffer of n elements with
// whole-buffer copies to and from the host, freed on destruction.
#pragma once

#include <cstddef>
#include <source_location>
#include <utility>
#include <vector>

#include "sim_device.h"
#include "sim_runtime.h"

namespace sim::selftest {

// A launch's grid and where the test launches it (taken at the call).
struct GridAt {
  template <typename G>
  GridAt(G g, std::source_location at = std::source_location::current()) // NOLINT: implicit
      : grid(g), at(at) {}
  dim3 grid;
  std::source_location at;
};

template <typename... P, typename... A>
cudaError_t run(GridAt grid, dim3 block, std::size_t smem, void (*kernel)(P...), A&&... args) {
  (void)sim::cudaGetLastError();
  sim::launch({"selftest kernel", grid.at.file_name(), int(grid.at.line())},
              sim::config(grid.grid, block, smem), kernel, std::forward<A>(args)...);
  return sim::cudaGetLastError();
}

template <typename T> struct Buf {
  explicit Buf(std::size_t n) : n(n) {
    sim::cudaMalloc(&p, n * sizeof(T));
    sim::cudaMemset(p, 0, n * sizeof(T));
  }
  ~Buf() { sim::cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  std::vector<T> get() const {
    std::vector<T> v(n);
    sim::cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
  void set(const std::vector<T>& v) {
    sim::cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  }
  T* p = nullptr;
  std::size_t n;
};

} // namespace sim::selftest
