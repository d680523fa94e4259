// Rotary position embedding (RoPE), Hugging Face's rotate-half convention, on
// H heads of D channels at row stride ld (the qkv buffer: H = NH + NKV rotates
// q and k in one call). The cos/sin table [T, D/2] (fp32) comes from
// cpu::rope_table (Llama 3 frequency scaling included), uploaded once.
//   forward : per pair (x0 = x[i], x1 = x[i + D/2]) at position t:
//             out[i] = x0 c - x1 s, out[i + D/2] = x1 c + x0 s.
//   backward: the transpose, rotation by -angle (overwrites dinp):
//             dinp[i] = d0 c + d1 s, dinp[i + D/2] = d1 c - d0 s.
// In place allowed (out == inp): a thread reads both channels of its pair
// before writing either, and no other thread touches them.
// One thread per pair, grid-stride over B*T*H*D/2 pairs, 256 threads per block.
// bytes: 2*B*T*H*D*sizeof(T) + table reads (L2-resident, T*D*4); FLOPs 3*B*T*H*D.
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

template <typename T>
__global__ void rope_kernel(T* out, const T* inp, const float* cos, const float* sin, float sign,
                            std::size_t pairs, int Tn, int H, int half, int ld) {
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t p = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs; p += stride) {
    const int i = int(p % half);
    const std::size_t rest = p / half;
    const int h = int(rest % H);
    const std::size_t bt = rest / H;
    const int t = int(bt % Tn);
    const std::size_t off = bt * std::size_t(ld) + std::size_t(h) * (2 * half) + i;
    const float c = cos[std::size_t(t) * half + i];
    const float s = sign * sin[std::size_t(t) * half + i];
    const float x0 = to_f32(inp[off]), x1 = to_f32(inp[off + half]);
    out[off] = from_f32<T>(x0 * c - x1 * s);
    out[off + half] = from_f32<T>(x1 * c + x0 * s);
  }
}

template <typename T>
void launch(const char* what, T* out, const T* inp, const float* cos, const float* sin, float sign,
            int B, int Tn, int H, int D, int ld, cudaStream_t s) {
  if (B <= 0 || Tn <= 0 || H <= 0 || D <= 0 || D % 2 != 0 || ld < H * D)
    throw std::invalid_argument(std::string(what) + ": bad shape");
  const std::size_t pairs = std::size_t(B) * Tn * H * (D / 2);
  rope_kernel<T>
      <<<grid_for(pairs, 256), 256, 0, s>>>(out, inp, cos, sin, sign, pairs, Tn, H, D / 2, ld);
  MYELIN_CUDA_CHECK_LAUNCH();
}

} // namespace

template <typename T>
void rope_forward(T* out, const T* inp, const float* cos, const float* sin, int B, int Tn, int H,
                  int D, int ld, cudaStream_t s) {
  launch("rope_forward", out, inp, cos, sin, 1.0f, B, Tn, H, D, ld, s);
}

template <typename T>
void rope_backward(T* dinp, const T* dout, const float* cos, const float* sin, int B, int Tn, int H,
                   int D, int ld, cudaStream_t s) {
  launch("rope_backward", dinp, dout, cos, sin, -1.0f, B, Tn, H, D, ld, s);
}

#define MYELIN_INST(T)                                                                             \
  template void rope_forward<T>(T*, const T*, const float*, const float*, int, int, int, int, int, \
                                cudaStream_t);                                                     \
  template void rope_backward<T>(T*, const T*, const float*, const float*, int, int, int, int,     \
                                 int, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
