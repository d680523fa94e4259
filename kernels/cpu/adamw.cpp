// AdamW update with decoupled weight decay and bias-corrected moments (llm.c's
// CPU AdamW):
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
//   mhat = m/(1-b1^t);   vhat = v/(1-b2^t)
//   param -= lr * (mhat/(sqrt(vhat)+eps) + wd*param)
// Traffic (elements): reads 4n (param, grad, m, v), writes 3n; about 15n FLOPs
// plus n square roots and n divisions. The bias corrections are computed once
// per call in double and rounded to Real.
// Parallel layout: the n elements are split statically across OpenMP threads;
// the inner loop is vectorised.
#include <cmath>
#include <cstddef>

#include "kernels/ops.h"

namespace myelin::cpu {

template <typename Real>
void adamw_update(Real* params, const Real* grads, Real* m, Real* v, std::size_t n,
                  const AdamWParams& p) {
  const Real lr = static_cast<Real>(p.lr);
  const Real b1 = static_cast<Real>(p.beta1);
  const Real b2 = static_cast<Real>(p.beta2);
  const Real eps = static_cast<Real>(p.eps);
  const Real wd = static_cast<Real>(p.weight_decay);
  const Real c1 = static_cast<Real>(1.0 / (1.0 - std::pow(static_cast<double>(p.beta1), p.t)));
  const Real c2 = static_cast<Real>(1.0 / (1.0 - std::pow(static_cast<double>(p.beta2), p.t)));
  const Real one = 1;
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (std::size_t i = 0; i < n; ++i) {
    const Real g = grads[i];
    const Real mi = b1 * m[i] + (one - b1) * g;
    const Real vi = b2 * v[i] + (one - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const Real mhat = mi * c1;
    const Real vhat = vi * c2;
    params[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * params[i]);
  }
}

template void adamw_update<float>(float*, const float*, float*, float*, std::size_t,
                                  const AdamWParams&);
template void adamw_update<double>(double*, const double*, double*, double*, std::size_t,
                                   const AdamWParams&);

} // namespace myelin::cpu
