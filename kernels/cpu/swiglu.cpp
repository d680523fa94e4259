// SwiGLU (Llama's MLP activation) on a fused (gate | up) buffer:
//   forward : out[n,j] = silu(g) * u,  g = gate_up[n,j], u = gate_up[n,I+j],
//             silu(g) = g * sig(g), sig(g) = 1/(1 + exp(-g))
//   backward: dgate_up[n,j]   += dout * u * sig * (1 + g*(1 - sig))
//             dgate_up[n,I+j] += dout * silu(g)
// Traffic (elements): forward reads 2*N*I, writes N*I, ~6 FLOPs + one exp and
// one division per output; backward reads 5*N*I (dout, gate_up, dgate_up),
// writes 2*N*I, ~12 FLOPs + one exp and one division per output.
// exp is the vectorisable polynomial of vexp.h (inputs clamped to the finite
// range), so for very negative g sig underflows towards 0 without producing
// inf or NaN. Parallel layout: rows are split statically across OpenMP
// threads; the channel loop is vectorised.
#include <cstddef>

#include "kernels/cpu/vexp.h"
#include "kernels/ops.h"

namespace myelin::cpu {

namespace {
// Rows whose total work is below this many outputs run on the calling thread.
constexpr long kParallelElems = 32768;
} // namespace

template <typename Real> void swiglu_forward(Real* out, const Real* gate_up, int N, int I) {
#pragma omp parallel for schedule(static) if (static_cast <long>(N) * I > kParallelElems)
  for (int n = 0; n < N; ++n) {
    const Real* g = gate_up + static_cast<std::size_t>(n) * 2 * I;
    const Real* u = g + I;
    Real* o = out + static_cast<std::size_t>(n) * I;
#pragma omp simd
    for (int j = 0; j < I; ++j) o[j] = g[j] / (Real(1) + vexp(-g[j])) * u[j];
  }
}

template <typename Real>
void swiglu_backward(Real* dgate_up, const Real* dout, const Real* gate_up, int N, int I) {
#pragma omp parallel for schedule(static) if (static_cast <long>(N) * I > kParallelElems)
  for (int n = 0; n < N; ++n) {
    const std::size_t row = static_cast<std::size_t>(n) * 2 * I;
    const Real* g = gate_up + row;
    const Real* u = g + I;
    Real* dg = dgate_up + row;
    Real* du = dg + I;
    const Real* d = dout + static_cast<std::size_t>(n) * I;
#pragma omp simd
    for (int j = 0; j < I; ++j) {
      const Real sig = Real(1) / (Real(1) + vexp(-g[j]));
      const Real silu = g[j] * sig;
      dg[j] += d[j] * u[j] * sig * (Real(1) + g[j] * (Real(1) - sig));
      du[j] += d[j] * silu;
    }
  }
}

template void swiglu_forward<float>(float*, const float*, int, int);
template void swiglu_forward<double>(double*, const double*, int, int);
template void swiglu_backward<float>(float*, const float*, const float*, int, int);
template void swiglu_backward<double>(double*, const double*, const double*, int, int);

} // namespace myelin::cpu
