// Backward of LayerNorm and RMSNorm over the last dimension C: one kernel pair,
// templated on the norm (forwards in layernorm.cu and rmsnorm.cu).
//   LayerNorm: xhat = (x - mean)*rstd, g = dout*w;
//             dinp += (g - mean(g) - xhat*mean(g*xhat)) * rstd;
//             dweight += sum_n dout*xhat, dbias += sum_n dout. C <= 4096.
//   RMSNorm : xhat = x*rrms, g = w*dout;
//             dinp += (g - xhat*mean(g*xhat)) * rrms; dweight += sum_n dout*xhat.
//             C <= 8192.
// Kernel 1: G = min(ceil(N/8), 512) blocks of 256 threads (8 warps); block b
// takes tiles of 8 rows b, b+G, ... In a tile, warp w reduces row 8*tile+w
// (16-byte packs, butterfly shuffles) and puts the row's statistics in shared
// memory (LayerNorm: mean, rstd, mean(g), mean(g*xhat); RMSNorm: rrms,
// mean(g*xhat); double-buffered: one barrier per tile). Then the threads switch
// to columns: S row slots (S = 1..8, the largest power of two with
// S * packs <= 256) of one thread per 16-byte pack; slot s walks the tile's
// rows s, s+S, ... in order, writes dinp and keeps its dweight (and dbias)
// partials in registers (C_max/256 floats each). Partials [G*S, K*C] go to
// scratch (K = 2 for LayerNorm, 1 for RMSNorm). Scalar path (1-element packs)
// when C is not a multiple of the pack or a row is not 16-byte aligned.
// Kernel 2: one thread per column sums the G*S partials in order.
// No float atomics; every sum has a fixed order: bit-deterministic.
// Registers (ptxas, sm_90): 64-80 per thread, no spills.
// bytes: 4*N*C*sizeof(T) from DRAM (dout and inp once: the column pass re-reads
// the tile from L1/L2; dinp read and written) + K*C*sizeof(T)*tiles from cache
// + 2*G*S*K*C*4 partials. FLOPs ~ 17*N*C (LayerNorm), ~ 12*N*C (RMSNorm).
// Launch: <<<G, 256>>> then <<<ceil(K*C/256), 256>>>.
#include <stdexcept>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

namespace {

constexpr int kBwdThreads = 256;
constexpr int kBwdMaxBlocks = 512;
constexpr int kTileRows = kBwdThreads / 32; // rows per tile: one per warp

enum class Norm { kLayer, kRms };

// Per-norm constants: largest C, statistics per row, partial rows per slot.
template <Norm K> struct NormTraits;
template <> struct NormTraits<Norm::kLayer> {
  static constexpr int kMaxC = 4096;
  static constexpr int kStats = 4; // mean, rstd, mean(g), mean(g*xhat)
  static constexpr int kOuts = 2;  // dweight, dbias
};
template <> struct NormTraits<Norm::kRms> {
  static constexpr int kMaxC = 8192;
  static constexpr int kStats = 2; // rrms, mean(g*xhat)
  static constexpr int kOuts = 1;  // dweight
};

// Row slots of the column pass: the largest power of two S <= 8 with S*P <= 256.
int col_slots(int packs) {
  int s = 1;
  while (s < kTileRows && 2 * s * packs <= kBwdThreads) s *= 2;
  return s;
}

int bwd_blocks(int N) {
  const int tiles = (N + kTileRows - 1) / kTileRows;
  return tiles < kBwdMaxBlocks ? tiles : kBwdMaxBlocks;
}

// Scratch floats for either norm: the most row slots any path takes (packs of
// 8 elements, bf16, give the fewest packs).
std::size_t bwd_scratch(int N, int C, int outs) {
  if (N <= 0 || C <= 0) return 0;
  const int S = col_slots(C / 8 > 0 ? C / 8 : 1);
  return std::size_t(bwd_blocks(N)) * std::size_t(S) * std::size_t(outs) * std::size_t(C);
}

// VN: elements per pack (kPack<T>, or 1 on the scalar path); NPK: packs per
// thread at the largest C, so that the register partials are C_max/256 floats.
// mean is unused (null) for RMSNorm; rstd is rrms there.
template <Norm K, typename T, int VN, int NPK>
__global__ void __launch_bounds__(kBwdThreads)
    norm_backward_kernel(T* dinp, float* partial, const T* dout, const T* inp, const T* w,
                         const float* mean, const float* rstd, int N, int C, int S) {
  constexpr bool kLn = K == Norm::kLayer;
  constexpr int kOuts = NormTraits<K>::kOuts;
  __shared__ float stats[2][kTileRows][NormTraits<K>::kStats];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int P = C / VN; // packs per row
  const int Pw = P < kBwdThreads ? P : kBwdThreads;
  const int slot = tid / Pw, p0 = tid % Pw; // column pass: row slot and first pack
  const bool active = slot < S;
  const float invC = 1.0f / float(C);
  float acc[kOuts][NPK * VN]; // dweight (, dbias) partials
#pragma unroll
  for (int o = 0; o < kOuts; ++o)
#pragma unroll
    for (int k = 0; k < NPK * VN; ++k) acc[o][k] = 0.0f;

  const int tiles = (N + kTileRows - 1) / kTileRows;
  int buf = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, buf ^= 1) {
    // Row pass: warp `warp` reduces its row.
    const int row = tile * kTileRows + warp;
    if (row < N) {
      const std::size_t off = std::size_t(row) * C;
      const float m = kLn ? mean[row] : 0.0f, r = rstd[row];
      float s1 = 0.0f, s2 = 0.0f;
      for (int p = lane; p < P; p += 32) {
        const Vec<T, VN> dv = load_vec<VN>(dout + off + std::size_t(p) * VN);
        const Vec<T, VN> xv = load_vec<VN>(inp + off + std::size_t(p) * VN);
        const Vec<T, VN> wv = load_vec<VN>(w + std::size_t(p) * VN);
#pragma unroll
        for (int k = 0; k < VN; ++k) {
          if constexpr (kLn) {
            const float g = to_f32(dv.v[k]) * to_f32(wv.v[k]);
            s1 += g;
            s2 += g * ((to_f32(xv.v[k]) - m) * r);
          } else {
            s2 += (to_f32(wv.v[k]) * to_f32(dv.v[k])) * (to_f32(xv.v[k]) * r);
          }
        }
      }
      if constexpr (kLn) s1 = warp_sum(s1);
      s2 = warp_sum(s2);
      if (lane == 0) {
        if constexpr (kLn) {
          stats[buf][warp][0] = m;
          stats[buf][warp][1] = r;
          stats[buf][warp][2] = s1 * invC;
          stats[buf][warp][3] = s2 * invC;
        } else {
          stats[buf][warp][0] = r;
          stats[buf][warp][1] = s2 * invC;
        }
      }
    }
    __syncthreads();
    // Column pass: slot `slot` takes rows slot, slot+S, ... of the tile.
    if (active) {
      for (int rr = slot; rr < kTileRows; rr += S) {
        const int row2 = tile * kTileRows + rr;
        if (row2 >= N) break;
        const std::size_t off = std::size_t(row2) * C;
        const float* st = stats[buf][rr];
        const float m = kLn ? st[0] : 0.0f, r = kLn ? st[1] : st[0];
        const float mg = kLn ? st[2] : 0.0f, mgx = kLn ? st[3] : st[1];
#pragma unroll
        for (int j = 0; j < NPK; ++j) {
          const int p = p0 + j * kBwdThreads;
          if (p < P) {
            const std::size_t c = std::size_t(p) * VN;
            const Vec<T, VN> dv = load_vec<VN>(dout + off + c);
            const Vec<T, VN> xv = load_vec<VN>(inp + off + c);
            const Vec<T, VN> wv = load_vec<VN>(w + c);
            Vec<T, VN> di = load_vec<VN>(dinp + off + c);
#pragma unroll
            for (int k = 0; k < VN; ++k) {
              const float d = to_f32(dv.v[k]);
              if constexpr (kLn) {
                const float xh = (to_f32(xv.v[k]) - m) * r;
                const float g = d * to_f32(wv.v[k]);
                di.v[k] = from_f32<T>(to_f32(di.v[k]) + (g - mg - xh * mgx) * r);
                acc[0][j * VN + k] += d * xh;
                acc[1][j * VN + k] += d;
              } else {
                const float xh = to_f32(xv.v[k]) * r;
                const float g = to_f32(wv.v[k]) * d;
                di.v[k] = from_f32<T>(to_f32(di.v[k]) + (g - xh * mgx) * r);
                acc[0][j * VN + k] += xh * d;
              }
            }
            store_vec(dinp + off + c, di);
          }
        }
      }
    }
  }
  if (!active) return;
  float* pw = partial + (std::size_t(blockIdx.x) * S + slot) * kOuts * C;
#pragma unroll
  for (int j = 0; j < NPK; ++j) {
    const int p = p0 + j * kBwdThreads;
    if (p < P) {
#pragma unroll
      for (int k = 0; k < VN; ++k)
#pragma unroll
        for (int o = 0; o < kOuts; ++o) pw[o * C + p * VN + k] = acc[o][j * VN + k];
    }
  }
}

// Column c < outs*C of the partials [G, outs*C]: c < C adds to dweight, the
// rest to dbias (LayerNorm only).
__global__ void norm_partial_reduce(float* dweight, float* dbias, const float* partial, int G,
                                    int C, int outs) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= outs * C) return;
  float acc = 0.0f;
  for (int g = 0; g < G; ++g) acc += partial[std::size_t(g) * outs * C + c];
  if (c < C) {
    dweight[c] += acc;
  } else {
    dbias[c - C] += acc;
  }
}

// Both kernels for norm K; the caller has checked shapes and pointers.
template <Norm K, typename T>
void launch_norm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp,
                          const T* weight, const float* mean, const float* rstd, int N, int C,
                          float* scratch, cudaStream_t s) {
  constexpr int kMaxC = NormTraits<K>::kMaxC, kOuts = NormTraits<K>::kOuts;
  const int G = bwd_blocks(N);
  constexpr int VN = kPack<T>;
  constexpr int kVecNpk = kMaxC / kBwdThreads / VN, kScalarNpk = kMaxC / kBwdThreads;
  const bool vec = rows_vectorisable<T>(C, {dinp, dout, inp, weight});
  const int S = col_slots(vec ? C / VN : C);
  if (vec)
    norm_backward_kernel<K, T, VN, kVecNpk>
        <<<G, kBwdThreads, 0, s>>>(dinp, scratch, dout, inp, weight, mean, rstd, N, C, S);
  else
    norm_backward_kernel<K, T, 1, kScalarNpk>
        <<<G, kBwdThreads, 0, s>>>(dinp, scratch, dout, inp, weight, mean, rstd, N, C, S);
  MYELIN_CUDA_CHECK_LAUNCH();
  norm_partial_reduce<<<unsigned((kOuts * C + 255) / 256), 256, 0, s>>>(dweight, dbias, scratch,
                                                                        G * S, C, kOuts);
  MYELIN_CUDA_CHECK_LAUNCH();
}

} // namespace

std::size_t layernorm_backward_scratch(int N, int C) {
  return bwd_scratch(N, C, NormTraits<Norm::kLayer>::kOuts);
}

std::size_t rmsnorm_backward_scratch(int N, int C) {
  return bwd_scratch(N, C, NormTraits<Norm::kRms>::kOuts);
}

template <typename T>
void layernorm_backward(T* dinp, float* dweight, float* dbias, const T* dout, const T* inp,
                        const T* weight, const float* mean, const float* rstd, int N, int C,
                        float* scratch, cudaStream_t s) {
  if (N <= 0 || C <= 0) throw std::invalid_argument("layernorm_backward: bad shape");
  if (C > NormTraits<Norm::kLayer>::kMaxC)
    throw std::invalid_argument("layernorm_backward: C must be <= 4096");
  if (!dinp || !dweight || !dbias || !scratch || !mean || !rstd)
    throw std::invalid_argument("layernorm_backward: null output, statistics or scratch");
  launch_norm_backward<Norm::kLayer>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C,
                                     scratch, s);
}

template <typename T>
void rmsnorm_backward(T* dinp, float* dweight, const T* dout, const T* inp, const T* weight,
                      const float* rrms, int N, int C, float* scratch, cudaStream_t s) {
  if (N <= 0 || C <= 0) throw std::invalid_argument("rmsnorm_backward: bad shape");
  if (C > NormTraits<Norm::kRms>::kMaxC)
    throw std::invalid_argument("rmsnorm_backward: C must be <= 8192");
  if (!dinp || !dweight || !scratch || !rrms)
    throw std::invalid_argument("rmsnorm_backward: null output, rrms or scratch");
  launch_norm_backward<Norm::kRms>(dinp, dweight, static_cast<float*>(nullptr), dout, inp, weight,
                                   static_cast<const float*>(nullptr), rrms, N, C, scratch, s);
}

#define MYELIN_INST(T)                                                                             \
  template void layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*,            \
                                      const float*, const float*, int, int, float*, cudaStream_t); \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int,   \
                                    int, float*, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
