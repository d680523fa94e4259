// Matmul: out[N,OC] = inp[N,IC] @ W[OC,IC]^T (+ bias) (+ GeLU), and its backward,
// through cuBLASLt with fp32 compute (CUBLAS_COMPUTE_32F: no TF32 for fp32
// storage, fp32 accumulation for bf16 storage).
//   Row-major X[N,IC] is column-major X^T [IC,N] (ld IC), so
//     forward : out^T[OC,N]  = op_T(W)[OC,IC] * X^T[IC,N]        (TN, m=OC, n=N, k=IC)
//     dinp    : dinp^T[IC,N] = W^T[IC,OC] * dout^T[OC,N]         (NN, m=IC, n=N, k=OC)
//     dweight : dW^T[IC,OC] += X^T[IC,N] * op_T(dout^T)[N,OC]    (NT, m=IC, n=OC, k=N)
//   FLOPs per call: forward 2*N*IC*OC; backward 4*N*IC*OC (+N*OC for dbias).
//   bytes (ideal): forward (N*IC + OC*IC + N*OC)*sizeof(T); backward reads dout
//   twice, inp, W, writes dinp, read-modify-writes dW in fp32.
//   Epilogues: BIAS, GELU(_AUX)_BIAS in the forward, DGELU in the backward
//   (needs the GeLU input's leading dimension to be a multiple of 8); when an
//   epilogue is not available the same result comes from separate kernels.
//   The bias gradient comes from the BGRADB epilogue of the dweight matmul
//   (op(B) = dout [N,OC], summed over k = N: no extra pass over dout). BGRADB
//   overwrites its vector, so it writes the OC floats into scratch and a
//   one-pass kernel adds them to dbias (gradient accumulation over
//   micro-batches): bytes 3*OC*4, <<<ceil(OC/256), 256>>>. It is used with
//   scale == 1 only (the documentation does not say whether alpha scales the
//   bias gradient) and where cuBLASLt offers an algorithm. Otherwise a
//   hand-written deterministic column reduction: grid (ceil(OC/32), R), block
//   32x8, R = clamp(N/128, 1, 64) row chunks, then R partials summed in order.
//   bytes: N*OC*sizeof(T) + 2*R*OC*4.
// Algorithms come from cublasLtMatmulAlgoGetHeuristic with the real pointer
// alignments and are cached per (shape, types, epilogue, alignment).
#include <array>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace myelin::cuda {

struct MatmulContext::Impl {
  LtHandle handle;
  DeviceBuffer<unsigned char> workspace;
  std::map<std::array<long long, 16>, cublasLtMatmulAlgo_t> cache;
  std::map<std::array<long long, 16>, bool> unsupported;
};

MatmulContext::MatmulContext(std::size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  impl_->workspace.allocate(workspace_bytes);
}
MatmulContext::~MatmulContext() = default;

namespace {

template <typename T> constexpr cudaDataType_t dtype_of() {
  return std::is_same<T, float>::value ? CUDA_R_32F : CUDA_R_16BF;
}

unsigned alignment_of(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  unsigned al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

// Destroys cuBLASLt descriptors on scope exit.
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

struct GemmArgs {
  cublasOperation_t ta, tb;
  int m, n, k;
  float alpha, beta;
  const void* A;
  cudaDataType_t at;
  int lda;
  const void* B;
  cudaDataType_t bt;
  int ldb;
  void* D; // also C (beta)
  cudaDataType_t dt;
  int ldd;
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  const void* aux = nullptr;
  int ldaux = 0;
};

// Runs D = alpha * op(A) op(B) + beta * D (+ epilogue). Returns false if cuBLASLt
// offers no algorithm for this combination (caller falls back); throws on errors.
bool lt_matmul(MatmulContext::Impl& ctx, const GemmArgs& g, cudaStream_t s) {
  const std::array<long long, 16> key = {
      g.ta,
      g.tb,
      g.m,
      g.n,
      g.k,
      g.at,
      g.bt,
      g.dt,
      g.lda,
      g.ldb,
      g.ldd,
      g.epi,
      g.ldaux,
      (long long)alignment_of(g.A) * 1000000 + alignment_of(g.B) * 1000 + alignment_of(g.D),
      (long long)(g.bias ? alignment_of(g.bias) : 0) * 1000 + (g.aux ? alignment_of(g.aux) : 0),
      g.beta != 0.0f};
  if (ctx.unsupported.count(key)) return false;

  LtDescs d;
  MYELIN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  MYELIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &g.ta, sizeof(g.ta)));
  MYELIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &g.tb, sizeof(g.tb)));
  if (g.epi != CUBLASLT_EPILOGUE_DEFAULT) {
    MYELIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &g.epi, sizeof(g.epi)));
  }
  if (g.bias) {
    MYELIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                       &g.bias, sizeof(g.bias)));
  }
  if (g.aux) {
    const int64_t ld = g.ldaux;
    MYELIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux, sizeof(g.aux)));
    MYELIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                       &ld, sizeof(ld)));
  }
  const bool an = g.ta == CUBLAS_OP_N, bn = g.tb == CUBLAS_OP_N;
  MYELIN_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&d.a, g.at, an ? g.m : g.k, an ? g.k : g.m, g.lda));
  MYELIN_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&d.b, g.bt, bn ? g.k : g.n, bn ? g.n : g.k, g.ldb));
  MYELIN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, g.dt, g.m, g.n, g.ldd));
  MYELIN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.d, g.dt, g.m, g.n, g.ldd));

  cublasLtMatmulAlgo_t algo;
  auto it = ctx.cache.find(key);
  if (it != ctx.cache.end()) {
    algo = it->second;
  } else {
    MYELIN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
    const std::size_t ws = ctx.workspace.bytes();
    MYELIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const uint32_t al_a = alignment_of(g.A), al_b = alignment_of(g.B), al_d = alignment_of(g.D);
    MYELIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
    MYELIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
    MYELIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
    MYELIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));
    cublasLtMatmulHeuristicResult_t res;
    std::memset(&res, 0, sizeof(res));
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.handle.get(), d.op, d.a, d.b, d.c,
                                                             d.d, d.pref, 1, &res, &found);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0) ||
        (st == CUBLAS_STATUS_SUCCESS && res.state != CUBLAS_STATUS_SUCCESS)) {
      ctx.unsupported[key] = true;
      return false;
    }
    MYELIN_CUBLAS_CHECK(st);
    algo = res.algo;
    ctx.cache[key] = algo;
  }
  MYELIN_CUBLAS_CHECK(cublasLtMatmul(ctx.handle.get(), d.op, &g.alpha, g.A, d.a, g.B, d.b, &g.beta,
                                     g.D, d.c, g.D, d.d, &algo, ctx.workspace.get(),
                                     ctx.workspace.bytes(), s));
  return true;
}

template <typename T> struct AddBiasOp {
  T* out;
  const T* bias;
  int OC;
  template <int W> __device__ void apply(std::size_t i) const {
    // W == 1 only (rows may not be pack aligned in general).
    out[i] = from_f32<T>(to_f32(out[i]) + to_f32(bias[i % OC]));
  }
};

// Bias gradient, stage 1: partial[r, c] = sum of dout[n, c] over row chunk r.
template <typename T>
__global__ void dbias_partial_kernel(float* partial, const T* dout, int N, int OC, int chunk) {
  __shared__ float sh[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * chunk;
  const int r1 = min(N, r0 + chunk);
  float acc = 0.0f;
  if (c < OC) {
    for (int r = r0 + threadIdx.y; r < r1; r += 8) acc += to_f32(dout[std::size_t(r) * OC + c]);
  }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < OC) {
    float s = 0.0f;
#pragma unroll
    for (int y = 0; y < 8; ++y) s += sh[y][threadIdx.x];
    partial[std::size_t(blockIdx.y) * OC + c] = s;
  }
}

__global__ void dbias_reduce_kernel(float* dbias, const float* partial, int R, int OC,
                                    float scale) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= OC) return;
  float acc = 0.0f;
  for (int r = 0; r < R; ++r) acc += partial[std::size_t(r) * OC + c];
  dbias[c] += scale * acc;
}

int dbias_chunks(int N) {
  int r = N / 128;
  if (r < 1) r = 1;
  if (r > 64) r = 64;
  return r;
}

void check_shape(const char* what, int N, int IC, int OC) {
  if (N <= 0 || IC <= 0 || OC <= 0) throw std::invalid_argument(std::string(what) + ": bad shape");
}

} // namespace

template <typename T> void add_bias(T* out, const T* bias, int N, int OC, cudaStream_t s) {
  launch_elementwise<T>(std::size_t(N) * OC, false, AddBiasOp<T>{out, bias, OC}, s);
}

std::size_t matmul_dbias_scratch(int N, int OC) {
  return std::size_t(dbias_chunks(N)) * std::size_t(OC);
}

template <typename T>
void matmul_forward(MatmulContext& ctx, T* out, T* pre_gelu, const T* inp, const T* weight,
                    const T* bias, int N, int IC, int OC, bool gelu, cudaStream_t s) {
  check_shape("matmul_forward", N, IC, OC);
  constexpr cudaDataType_t dt = dtype_of<T>();
  GemmArgs g{CUBLAS_OP_T, CUBLAS_OP_N, OC,  N,  IC, 1.0f, 0.0f, weight,
             dt,          IC,          inp, dt, IC, out,  dt,   OC};
  g.bias = bias;
  if (gelu) {
    const bool aux = pre_gelu != nullptr;
    if (!aux || OC % 8 == 0) {
      g.epi = aux ? (bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                  : (bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU);
      g.aux = pre_gelu;
      g.ldaux = OC;
      if (lt_matmul(ctx.impl(), g, s)) return;
    }
    // Unfused: pre-activation into pre_gelu (or out), then GeLU into out.
    g.aux = nullptr;
    g.ldaux = 0;
    g.D = aux ? static_cast<void*>(pre_gelu) : static_cast<void*>(out);
  }
  g.epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  if (!lt_matmul(ctx.impl(), g, s)) {
    if (!bias) throw std::runtime_error("matmul_forward: cuBLASLt found no algorithm");
    g.epi = CUBLASLT_EPILOGUE_DEFAULT;
    g.bias = nullptr;
    if (!lt_matmul(ctx.impl(), g, s))
      throw std::runtime_error("matmul_forward: cuBLASLt found no algorithm");
    add_bias(static_cast<T*>(g.D), bias, N, OC, s);
  }
  if (gelu) gelu_forward(out, static_cast<const T*>(g.D), std::size_t(N) * OC, s);
}

template <typename T>
void matmul_backward(MatmulContext& ctx, T* dinp, float* dweight, float* dbias, const T* dout,
                     const T* inp, const T* weight, const T* pre_gelu, int N, int IC, int OC,
                     float scale, float* scratch, cudaStream_t s) {
  check_shape("matmul_backward", N, IC, OC);
  constexpr cudaDataType_t dt = dtype_of<T>();
  if (dinp) {
    GemmArgs g{CUBLAS_OP_N, CUBLAS_OP_N, IC,   N,  OC, scale, 0.0f, weight,
               dt,          IC,          dout, dt, OC, dinp,  dt,   IC};
    bool done = false;
    if (pre_gelu && IC % 8 == 0) {
      g.epi = CUBLASLT_EPILOGUE_DGELU;
      g.aux = pre_gelu;
      g.ldaux = IC;
      done = lt_matmul(ctx.impl(), g, s);
      g.epi = CUBLASLT_EPILOGUE_DEFAULT;
      g.aux = nullptr;
      g.ldaux = 0;
    }
    if (!done) {
      if (!lt_matmul(ctx.impl(), g, s))
        throw std::runtime_error("matmul_backward (dinp): cuBLASLt found no algorithm");
      if (pre_gelu) gelu_backward(dinp, pre_gelu, dinp, std::size_t(N) * IC, s);
    }
  }
  if (dbias && !scratch) throw std::invalid_argument("matmul_backward: dbias needs scratch");
  bool dbias_done = false;
  if (dweight) {
    GemmArgs g{CUBLAS_OP_N, CUBLAS_OP_T, IC,   OC, N,  scale,   1.0f,       inp,
               dt,          IC,          dout, dt, OC, dweight, CUDA_R_32F, IC};
    if (dbias && scale == 1.0f) {
      // Bias gradient (fp32, the type of D) into scratch, then added below.
      g.epi = CUBLASLT_EPILOGUE_BGRADB;
      g.bias = scratch;
      dbias_done = lt_matmul(ctx.impl(), g, s);
      g.epi = CUBLASLT_EPILOGUE_DEFAULT;
      g.bias = nullptr;
    }
    if (!dbias_done && !lt_matmul(ctx.impl(), g, s))
      throw std::runtime_error("matmul_backward (dweight): cuBLASLt found no algorithm");
  }
  if (dbias_done) {
    dbias_reduce_kernel<<<unsigned((OC + 255) / 256), 256, 0, s>>>(dbias, scratch, 1, OC, 1.0f);
    MYELIN_CUDA_CHECK_LAUNCH();
  } else if (dbias) {
    const int R = dbias_chunks(N);
    const int chunk = (N + R - 1) / R;
    dbias_partial_kernel<T><<<dim3(unsigned((OC + 31) / 32), unsigned(R)), dim3(32, 8), 0, s>>>(
        scratch, dout, N, OC, chunk);
    MYELIN_CUDA_CHECK_LAUNCH();
    dbias_reduce_kernel<<<unsigned((OC + 255) / 256), 256, 0, s>>>(dbias, scratch, R, OC, scale);
    MYELIN_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void gemm_tn(MatmulContext& ctx, T* D, const T* A, const T* B, int m, int n, int k,
             cudaStream_t s) {
  constexpr cudaDataType_t dt = dtype_of<T>();
  GemmArgs g{CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, 1.0f, 0.0f, A, dt, k, B, dt, k, D, dt, m};
  if (!lt_matmul(ctx.impl(), g, s)) throw std::runtime_error("gemm_tn: no cuBLASLt algorithm");
}

#define MYELIN_INST(T)                                                                             \
  template void add_bias<T>(T*, const T*, int, int, cudaStream_t);                                 \
  template void matmul_forward<T>(MatmulContext&, T*, T*, const T*, const T*, const T*, int, int,  \
                                  int, bool, cudaStream_t);                                        \
  template void matmul_backward<T>(MatmulContext&, T*, float*, float*, const T*, const T*,         \
                                   const T*, const T*, int, int, int, float, float*,               \
                                   cudaStream_t);                                                  \
  template void gemm_tn<T>(MatmulContext&, T*, const T*, const T*, int, int, int, cudaStream_t);
MYELIN_INST(float)
MYELIN_INST(__nv_bfloat16)
#undef MYELIN_INST

} // namespace myelin::cuda
