// Shared pieces of the CUDA backend: error checks that throw, RAII owners of
// device memory / streams / events / the cuBLASLt handle / graphs, bf16 <-> fp32
// conversion, and a 16-byte vector type for vectorised loads and stores.
//
// The host part (everything outside `#ifdef __CUDACC__`) is plain C++ and may
// be included from .cpp files (the CUDA engine, the tests, the benchmark).
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

namespace myelin::cuda {

namespace detail {
[[noreturn]] inline void throw_cuda(cudaError_t e, const char* expr, const char* file, int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": CUDA error " +
                           cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in " + expr);
}
[[noreturn]] inline void throw_cublas(cublasStatus_t s, const char* expr, const char* file,
                                      int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": cuBLAS error " +
                           cublasLtGetStatusString(s) + " (" + std::to_string(int(s)) + ") in " +
                           expr);
}
} // namespace detail

#define MYELIN_CUDA_CHECK(expr)                                                                    \
  do {                                                                                             \
    const cudaError_t myelin_err_ = (expr);                                                        \
    if (myelin_err_ != cudaSuccess)                                                                \
      ::myelin::cuda::detail::throw_cuda(myelin_err_, #expr, __FILE__, __LINE__);                  \
  } while (0)

#define MYELIN_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                             \
    const cublasStatus_t myelin_st_ = (expr);                                                      \
    if (myelin_st_ != CUBLAS_STATUS_SUCCESS)                                                       \
      ::myelin::cuda::detail::throw_cublas(myelin_st_, #expr, __FILE__, __LINE__);                 \
  } while (0)

// After a kernel launch: reports launch-configuration errors (not asynchronous faults).
#define MYELIN_CUDA_CHECK_LAUNCH() MYELIN_CUDA_CHECK(cudaGetLastError())

// ---- RAII owners --------------------------------------------------------------
template <typename T> class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) { allocate(n); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  void allocate(std::size_t n) {
    release();
    if (n == 0) return;
    void* p = nullptr;
    MYELIN_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
    p_ = static_cast<T*>(p);
    n_ = n;
  }
  void release() noexcept {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* get() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

class Stream {
 public:
  Stream() { MYELIN_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (s_) cudaStreamDestroy(s_);
  }
  cudaStream_t get() const { return s_; }
  void sync() const { MYELIN_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  Event() { MYELIN_CUDA_CHECK(cudaEventCreate(&e_)); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t s) { MYELIN_CUDA_CHECK(cudaEventRecord(e_, s)); }
  // Milliseconds from `start` to this event (both recorded and completed).
  float since(const Event& start) const {
    MYELIN_CUDA_CHECK(cudaEventSynchronize(e_));
    float ms = 0.0f;
    MYELIN_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }

 private:
  cudaEvent_t e_ = nullptr;
};

class LtHandle {
 public:
  LtHandle() { MYELIN_CUBLAS_CHECK(cublasLtCreate(&h_)); }
  LtHandle(const LtHandle&) = delete;
  LtHandle& operator=(const LtHandle&) = delete;
  ~LtHandle() {
    if (h_) cublasLtDestroy(h_);
  }
  cublasLtHandle_t get() const { return h_; }

 private:
  cublasLtHandle_t h_ = nullptr;
};

// An executable graph: the device work a callable queued on a stream,
// recorded once by stream capture and launched as one unit. capture() runs
// `queue` with `s` capturing (mode thread-local: the calling thread may not
// wait for the device or allocate meanwhile; such a call fails and so does
// the capture). The host code in `queue` runs once, at the capture; its
// device work runs at each launch(), with the pointers and scalars it was
// queued with. If `queue` throws, the capture is ended and the exception
// passed on; a capture that fails throws. Either way the stream is usable
// afterwards and the thread's last error is cleared.
class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  Graph(Graph&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Graph& operator=(Graph&& o) noexcept {
    if (this != &o) {
      reset();
      e_ = std::exchange(o.e_, nullptr);
    }
    return *this;
  }
  ~Graph() { reset(); }
  explicit operator bool() const { return e_ != nullptr; }

  template <class F> static Graph capture(cudaStream_t s, F&& queue) {
    MYELIN_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      queue();
    } catch (...) {
      cudaGraph_t g = nullptr;
      if (cudaStreamEndCapture(s, &g) == cudaSuccess && g) cudaGraphDestroy(g);
      (void)cudaGetLastError(); // the failed capture's error must not fail later launches
      throw;
    }
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(s, &g);
    Graph out;
    if (e == cudaSuccess) e = cudaGraphInstantiate(&out.e_, g, 0);
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      detail::throw_cuda(e, "capturing a graph", __FILE__, __LINE__);
    }
    return out;
  }
  void launch(cudaStream_t s) const { MYELIN_CUDA_CHECK(cudaGraphLaunch(e_, s)); }

 private:
  void reset() noexcept {
    if (e_) cudaGraphExecDestroy(e_);
    e_ = nullptr;
  }
  cudaGraphExec_t e_ = nullptr;
};

using bf16 = __nv_bfloat16;

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// Blocks for a grid-stride loop over `items` with `threads` per block.
inline unsigned grid_for(std::size_t items, unsigned threads, unsigned max_blocks = 1u << 16) {
  std::size_t b = (items + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

} // namespace myelin::cuda

#ifdef __CUDACC__
namespace myelin::cuda {

// ---- scalar conversion ----------------------------------------------------------
__host__ __device__ __forceinline__ float to_f32(float x) { return x; }
__host__ __device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __host__ __device__ __forceinline__ T from_f32(float x);
template <> __host__ __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---- vector of W elements, loaded/stored in one instruction when 16 bytes ----------
template <typename T, int W> struct alignas(W * sizeof(T)) Vec { T v[W]; };
// Elements per 16-byte pack.
template <typename T> inline constexpr int kPack = 16 / int(sizeof(T));

template <int W, typename T> __device__ __forceinline__ Vec<T, W> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, W>*>(p);
}
template <int W, typename T> __device__ __forceinline__ void store_vec(T* p, const Vec<T, W>& x) {
  *reinterpret_cast<Vec<T, W>*>(p) = x;
}

// ---- warp reductions (butterfly: every lane gets the same, deterministic result) ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---- rows of C elements (the norms) -------------------------------------------------
// Whether every row of C elements at the given pointers (null ones skipped)
// can be read and written in 16-byte packs.
template <typename T> bool rows_vectorisable(int C, std::initializer_list<const void*> ptrs) {
  if (C % kPack<T> != 0) return false;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return false;
  return true;
}

// Sum over the row of f(x) for x in row (fp32), by one warp.
template <typename T, typename F>
__device__ __forceinline__ float warp_row_sum(const T* row, int C, bool vec, int lane, F f) {
  float acc = 0.0f;
  if (vec) {
    constexpr int VN = kPack<T>;
    for (int i = lane * VN; i < C; i += 32 * VN) {
      const Vec<T, VN> p = load_vec<VN>(row + i);
#pragma unroll
      for (int k = 0; k < VN; ++k) acc += f(to_f32(p.v[k]));
    }
  } else {
    for (int i = lane; i < C; i += 32) acc += f(to_f32(row[i]));
  }
  return warp_sum(acc);
}

// One warp: res = a + b over a row (rounded to T and stored), returning the
// warp-wide sum of f(stored value). Lane l touches only the elements it will
// read back later in the same pattern (no barrier needed).
template <typename T, typename F>
__device__ __forceinline__ float warp_residual_row(T* res, const T* a, const T* b, int C, bool vec,
                                                   int lane, F f) {
  float acc = 0.0f;
  if (vec) {
    constexpr int VN = kPack<T>;
    for (int i = lane * VN; i < C; i += 32 * VN) {
      const Vec<T, VN> x = load_vec<VN>(a + i);
      const Vec<T, VN> y = load_vec<VN>(b + i);
      Vec<T, VN> r;
#pragma unroll
      for (int k = 0; k < VN; ++k) {
        r.v[k] = from_f32<T>(to_f32(x.v[k]) + to_f32(y.v[k]));
        acc += f(to_f32(r.v[k]));
      }
      store_vec(res + i, r);
    }
  } else {
    for (int i = lane; i < C; i += 32) {
      const T r = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
      res[i] = r;
      acc += f(to_f32(r));
    }
  }
  return warp_sum(acc);
}

// ---- elementwise driver ------------------------------------------------------------
// Calls f.template apply<W>(i) for elements [i, i+W): 16-byte packs over the
// first n / kPack * kPack elements when `vec` (all pointers 16-byte aligned),
// then single elements for the tail. Grid-stride.
template <typename T, typename F> __global__ void elementwise_kernel(std::size_t n, bool vec, F f) {
  constexpr int VN = kPack<T>;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  const std::size_t tid = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::size_t npack = vec ? n / VN : 0;
  for (std::size_t p = tid; p < npack; p += stride) f.template apply<VN>(p * VN);
  for (std::size_t i = npack * VN + tid; i < n; i += stride) f.template apply<1>(i);
}

template <typename T, typename F>
void launch_elementwise(std::size_t n, bool vec, const F& f, cudaStream_t s) {
  if (n == 0) return;
  const std::size_t items = vec ? n / kPack<T> + kPack<T> : n;
  elementwise_kernel<T, F><<<grid_for(items, 256), 256, 0, s>>>(n, vec, f);
  MYELIN_CUDA_CHECK_LAUNCH();
}

} // namespace myelin::cuda
#endif // __CUDACC__
