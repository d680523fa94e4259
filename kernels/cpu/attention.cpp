// Causal grouped-query self-attention (Llama) and multi-head attention
// (GPT-2, the case NKV == NH, D = C/NH): one implementation. NH query heads,
// NKV key/value heads, group g = NH/NKV, query head h reads kv head h/g;
// head size D, scale = 1/sqrt(D); qkv rows are (q: NH*D | k: NKV*D | v: NKV*D).
//   forward : per (b,h): S = scale * Q_h K_{h/g}^T (causal),
//             P = softmax_rows(S) -> att (zeros above the diagonal),
//             out[:, h] = P V_{h/g}
//   backward: dP = dO V^T; dS = scale * P * (dP - rowsum(P*dP)) -> scratch
//             dQ_h += dS K;  dK_{h/g} += sum over the group's h of dS^T Q_h;
//             dV_{h/g} += sum over the group's h of P^T dO_h
// FLOPs: forward ~2*B*NH*T^2*D useful (QK^T and PV on the causal triangle)
// plus B*NH*T^2/2 exps; the block-causal gemms below compute the triangle plus
// the diagonal blocks, i.e. (1 + RB/T)/2 of the full square. Backward ~2x the
// forward. Traffic (elements): reads qkv (B*T*(NH+2*NKV)*D) a few times per row
// block (L2-resident per head), writes att (B*NH*T*T) and out (B*T*NH*D);
// backward reads att, dout, qkv, writes scratch (B*NH*T*T) and dqkv.
// Parallel layout: all parallelism comes from OpenMP; every gemm is a
// single-threaded OpenBLAS call made from inside the OpenMP region (OpenBLAS is
// set to 1 thread for the duration of the call and restored afterwards: nested
// BLAS threads would oversubscribe the cores). Forward: one task per (b, h, row
// block of RB=64 query rows); the task computes its S rows with one gemm,
// the softmax, and its out rows with a second gemm (only key columns [0, r1)
// are touched). Backward phase A: one task per (b, h, row block) computes dP,
// dS and dQ rows; phase B: one task per (b, kv head, column block) computes the
// dK and dV rows of its keys from the dS and P columns below the diagonal,
// adding the group's query heads in order. Tasks are scheduled dynamically
// (their cost grows or shrinks along the triangle); each output element is
// owned by one task, so there are no atomics and the result does not depend on
// the thread count. Softmax rows run over whole 16-wide vectors (columns past
// the diagonal masked to 0) with a vectorisable exp. Measured on 2 shared AMD
// EPYC (Zen 4) cores, fp32, best of 400 runs, OMP_NUM_THREADS=2 (GPT-2 shapes):
// B=4,T=256,C=256,NH=4 forward 1.5 ms + backward 2.8 ms
// (per-row dot-product loops parallel over (b,h,t): 5.1 + 9.7 ms; one gemm per
// head with multi-threaded OpenBLAS: 8.8 + 11.8 ms); B=8,T=64,C=64,NH=4
// forward 0.18 ms + backward 0.25 ms (loops: 0.60 + 0.84 ms).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include <cblas.h>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/vexp.h"
#include "kernels/ops.h"

namespace myelin::cpu {

namespace {

// Query rows (forward, phase A) or key rows (phase B) per task. 32, 64 and 128
// measured the same within noise at T = 64..512; 64 keeps the gemms efficient.
constexpr int kRB = 64;

// End of the columns a row-t softmax touches: t+1 rounded up to a multiple of
// 16 (whole AVX-512 vectors), capped at the r1 columns the block's gemm wrote.
inline int padded_end(int t, int r1) { return std::min(r1, (t + 16) & ~15); }

// Below about 64K multiply-adds a call runs on the calling thread.
bool run_parallel(int B, int NH, int T, int hs) {
  return static_cast<double>(B) * NH * T * T * hs > 65536.0;
}

// Where one (b, head) starts in the qkv buffer (row stride ld) or in att.
struct HeadOffsets {
  std::size_t q, k, v, att;
};
inline HeadOffsets head_offsets(int b, int h, int NH, int NKV, int D, int T) {
  const std::size_t ld = static_cast<std::size_t>(NH + 2 * NKV) * D;
  const std::size_t row0 = static_cast<std::size_t>(b) * T * ld;
  const int kvh = h / (NH / NKV);
  const std::size_t k = row0 + static_cast<std::size_t>(NH + kvh) * D;
  return {row0 + static_cast<std::size_t>(h) * D, k, k + static_cast<std::size_t>(NKV) * D,
          (static_cast<std::size_t>(b) * NH + h) * T * static_cast<std::size_t>(T)};
}

} // namespace

template <typename Real>
void gqa_attention_forward(Real* out, Real* att, const Real* qkv, int B, int T, int NH, int NKV,
                           int D) {
  const Real scale = Real(1) / std::sqrt(static_cast<Real>(D));
  const int ld = (NH + 2 * NKV) * D;
  const int OC = NH * D;
  const std::size_t sT = static_cast<std::size_t>(T);
  const int nrb = (T + kRB - 1) / kRB;
  const long ntasks = static_cast<long>(B) * NH * nrb;
  BlasSingleThread blas1;
#pragma omp parallel for schedule(dynamic, 1) if (ntasks > 1 && run_parallel(B, NH, T, D))
  for (long task = 0; task < ntasks; ++task) {
    // Largest row blocks first: they cost the most.
    const int rb = nrb - 1 - static_cast<int>(task % nrb);
    const int h = static_cast<int>((task / nrb) % NH);
    const int b = static_cast<int>(task / (static_cast<long>(nrb) * NH));
    const int r0 = rb * kRB;
    const int r1 = std::min(T, r0 + kRB);
    const HeadOffsets o = head_offsets(b, h, NH, NKV, D, T);
    const Real* q = qkv + o.q;
    const Real* k = qkv + o.k;
    const Real* v = qkv + o.v;
    Real* a = att + o.att;
    // S[r0:r1, 0:r1] = scale * Q[r0:r1] K[0:r1]^T
    gemm(false, true, r1 - r0, r1, D, scale, q + static_cast<std::size_t>(r0) * ld, ld, k, ld,
         Real(0), a + static_cast<std::size_t>(r0) * sT, T);
    for (int t = r0; t < r1; ++t) {
      // Columns [0, n): the causal ones (j <= t) rounded up to whole vectors, so
      // the loops run at full vector width; j > t is masked to probability 0.
      Real* row = a + static_cast<std::size_t>(t) * sT;
      const int n = padded_end(t, r1);
      Real mx = std::numeric_limits<Real>::lowest();
#pragma omp simd reduction(max : mx)
      for (int j = 0; j < n; ++j) {
        const Real x = j <= t ? row[j] : std::numeric_limits<Real>::lowest();
        mx = x > mx ? x : mx;
      }
      Real sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < n; ++j) {
        const Real e = j <= t ? vexp(row[j] - mx) : Real(0);
        row[j] = e;
        sum += e;
      }
      const Real inv = Real(1) / sum;
#pragma omp simd
      for (int j = 0; j < n; ++j) row[j] *= inv;
      std::fill(row + n, row + T, Real(0));
    }
    // out[r0:r1, h] = P[r0:r1, 0:r1] V[0:r1]
    gemm(false, false, r1 - r0, D, r1, Real(1), a + static_cast<std::size_t>(r0) * sT, T, v, ld,
         Real(0),
         out + (static_cast<std::size_t>(b) * sT + r0) * OC + static_cast<std::size_t>(h) * D, OC);
  }
}

template <typename Real>
void gqa_attention_backward(Real* dqkv, Real* scratch, const Real* dout, const Real* qkv,
                            const Real* att, int B, int T, int NH, int NKV, int D) {
  const Real scale = Real(1) / std::sqrt(static_cast<Real>(D));
  const int ld = (NH + 2 * NKV) * D;
  const int OC = NH * D;
  const int group = NH / NKV;
  const std::size_t sT = static_cast<std::size_t>(T);
  const int nrb = (T + kRB - 1) / kRB;
  const long ntasks = static_cast<long>(B) * NH * nrb;
  const long ntasks_kv = static_cast<long>(B) * NKV * nrb;
  BlasSingleThread blas1;
#pragma omp parallel if (ntasks > 1 && run_parallel(B, NH, T, D))
  {
    // Phase A, per query row block: dP = dO V^T, dS = scale*P*(dP - <P,dP>), dQ += dS K.
#pragma omp for schedule(dynamic, 1)
    for (long task = 0; task < ntasks; ++task) {
      const int rb = nrb - 1 - static_cast<int>(task % nrb);
      const int h = static_cast<int>((task / nrb) % NH);
      const int b = static_cast<int>(task / (static_cast<long>(nrb) * NH));
      const int r0 = rb * kRB;
      const int r1 = std::min(T, r0 + kRB);
      const HeadOffsets o = head_offsets(b, h, NH, NKV, D, T);
      const Real* k = qkv + o.k;
      const Real* v = qkv + o.v;
      Real* dq = dqkv + o.q;
      const Real* a = att + o.att;
      Real* ds = scratch + o.att;
      const Real* dO =
          dout + static_cast<std::size_t>(b) * sT * OC + static_cast<std::size_t>(h) * D;
      gemm(false, true, r1 - r0, r1, D, Real(1), dO + static_cast<std::size_t>(r0) * OC, OC, v, ld,
           Real(0), ds + static_cast<std::size_t>(r0) * sT, T);
      for (int t = r0; t < r1; ++t) {
        // P[t, j] = 0 for j > t, so the padded columns [t+1, n) come out as 0.
        const Real* p = a + static_cast<std::size_t>(t) * sT;
        Real* d = ds + static_cast<std::size_t>(t) * sT;
        const int n = padded_end(t, r1);
        Real dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < n; ++j) dot += p[j] * d[j];
#pragma omp simd
        for (int j = 0; j < n; ++j) d[j] = scale * p[j] * (d[j] - dot);
        // Zero the rest of the row inside this block: the dQ gemm below and
        // phase B read dS[t, j] for t < j < r1.
        std::fill(d + n, d + r1, Real(0));
      }
      gemm(false, false, r1 - r0, D, r1, Real(1), ds + static_cast<std::size_t>(r0) * sT, T, k, ld,
           Real(1), dq + static_cast<std::size_t>(r0) * ld, ld);
    }
    // (implicit barrier: phase B reads dS columns written by other tasks)
    // Phase B, per kv head and key row block [c0, c1), for each query head h of
    // the group in order: dK += dS_h[c0:T, c0:c1]^T Q_h[c0:T],
    //                     dV += P_h[c0:T, c0:c1]^T dO_h[c0:T].
#pragma omp for schedule(dynamic, 1)
    for (long task = 0; task < ntasks_kv; ++task) {
      const int cb = static_cast<int>(task % nrb); // first key blocks cost the most
      const int kvh = static_cast<int>((task / nrb) % NKV);
      const int b = static_cast<int>(task / (static_cast<long>(nrb) * NKV));
      const int c0 = cb * kRB;
      const int c1 = std::min(T, c0 + kRB);
      const std::size_t corner = static_cast<std::size_t>(c0) * sT + c0;
      for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        const HeadOffsets o = head_offsets(b, h, NH, NKV, D, T);
        const Real* q = qkv + o.q;
        Real* dk = dqkv + o.k;
        Real* dv = dqkv + o.v;
        const Real* dO =
            dout + static_cast<std::size_t>(b) * sT * OC + static_cast<std::size_t>(h) * D;
        gemm(true, false, c1 - c0, D, T - c0, Real(1), scratch + o.att + corner, T,
             q + static_cast<std::size_t>(c0) * ld, ld, Real(1),
             dk + static_cast<std::size_t>(c0) * ld, ld);
        gemm(true, false, c1 - c0, D, T - c0, Real(1), att + o.att + corner, T,
             dO + static_cast<std::size_t>(c0) * OC, OC, Real(1),
             dv + static_cast<std::size_t>(c0) * ld, ld);
      }
    }
  }
}

template <typename Real>
void attention_forward(Real* out, Real* att, const Real* qkv, int B, int T, int C, int NH) {
  gqa_attention_forward(out, att, qkv, B, T, NH, NH, C / NH);
}

template <typename Real>
void attention_backward(Real* dqkv, Real* scratch, const Real* dout, const Real* qkv,
                        const Real* att, int B, int T, int C, int NH) {
  gqa_attention_backward(dqkv, scratch, dout, qkv, att, B, T, NH, NH, C / NH);
}

template void gqa_attention_forward<float>(float*, float*, const float*, int, int, int, int, int);
template void gqa_attention_forward<double>(double*, double*, const double*, int, int, int, int,
                                            int);
template void gqa_attention_backward<float>(float*, float*, const float*, const float*,
                                            const float*, int, int, int, int, int);
template void gqa_attention_backward<double>(double*, double*, const double*, const double*,
                                             const double*, int, int, int, int, int);
template void attention_forward<float>(float*, float*, const float*, int, int, int, int);
template void attention_forward<double>(double*, double*, const double*, int, int, int, int);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*,
                                        int, int, int, int);
template void attention_backward<double>(double*, double*, const double*, const double*,
                                         const double*, int, int, int, int);

} // namespace myelin::cpu
