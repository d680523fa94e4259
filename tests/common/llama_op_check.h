// The checks of the Llama CUDA kernels (RMSNorm, rotary embedding, SwiGLU)
// against the double CPU reference, written once for the GPU tests
// (tests/gpu) and the CPU simulation (tests/sim). Tolerances are those of
// kernel_check.h; outputs a kernel overwrites are poisoned first.
//
// Mem is the test's device-memory policy:
//   Mem::template up<T>(host floats) -> a device buffer of T (.get());
//   Mem::template poisoned<T>(n)     -> n elements of T, all bits set (NaN);
//   Mem::down(buffer)                -> host floats, after the device is done;
//   Mem::stream()                    -> the stream the kernels run on;
//   Mem::rerun_same(first, run, read, what): runs `run` again and requires
//     `read()` to equal `first` bit for bit (the simulation reruns under the
//     opposite order of threads between barriers; a GPU simply reruns).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "tests/common/kernel_check.h"

namespace myelin::llama_op_check {

using namespace myelin::kernel_check;

// RMSNorm forward (and its recomputation, bit-identical), backward
// (accumulating into dinp and dweight, deterministic) and the fused residual form.
template <typename T, class Mem> void check_rmsnorm(int N, int C, float eps) {
  const std::size_t NC = std::size_t(N) * C;
  const auto x = representable<T>(rand_vec(NC, -2.0f, 3.0f));
  const auto w = representable<T>(rand_vec(std::size_t(C), 0.5f, 1.5f));
  const auto y = representable<T>(rand_vec(NC));
  const auto dout = representable<T>(rand_vec(NC));
  const auto dinp0 = representable<T>(rand_vec(NC));
  const auto dw0 = rand_vec(std::size_t(C));
  auto xd = to_d(x), wd = to_d(w), doutd = to_d(dout);
  std::vector<double> out(NC), rrms(static_cast<std::size_t>(N));
  cpu::rmsnorm_forward(out.data(), rrms.data(), xd.data(), wd.data(), N, C, double(eps));
  auto rdinp = to_d(dinp0), rdw = to_d(dw0);
  cpu::rmsnorm_backward(rdinp.data(), rdw.data(), doutd.data(), xd.data(), wd.data(), rrms.data(),
                        N, C);
  const std::string tag = " N=" + std::to_string(N) + " C=" + std::to_string(C);
  const auto st = Mem::stream();

  auto gx = Mem::template up<T>(x), gw = Mem::template up<T>(w), gy = Mem::template up<T>(y);
  auto gdout = Mem::template up<T>(dout);
  auto gout = Mem::template poisoned<T>(NC);
  auto grr = Mem::template poisoned<float>(std::size_t(N));
  auto fwd = [&] {
    cuda::rmsnorm_forward(gout.get(), grr.get(), gx.get(), gw.get(), N, C, eps, st);
  };
  fwd();
  const auto out_g = Mem::down(gout);
  expect_close_t<T>(out, out_g, "rmsnorm_forward out" + tag);
  expect_close_t<T>(rrms, Mem::down(grr), "rmsnorm_forward rrms" + tag);
  Mem::rerun_same(
      out_g, fwd, [&] { return Mem::down(gout); }, "rmsnorm_forward" + tag);
  auto gapply = Mem::template poisoned<T>(NC);
  cuda::rmsnorm_apply(gapply.get(), gx.get(), gw.get(), grr.get(), N, C, st);
  expect_same_bits(out_g, Mem::down(gapply), "rmsnorm_apply differs from rmsnorm_forward" + tag);

  // Backward from the reference statistics: dinp and dweight accumulate.
  auto gr = Mem::template up<float>(std::vector<float>(rrms.begin(), rrms.end()));
  auto gdinp = Mem::template up<T>(dinp0);
  auto gdw = Mem::template up<float>(dw0);
  auto scratch = Mem::template poisoned<float>(cuda::rmsnorm_backward_scratch(N, C));
  cuda::rmsnorm_backward(gdinp.get(), gdw.get(), gdout.get(), gx.get(), gw.get(), gr.get(), N, C,
                         scratch.get(), st);
  const auto dinp_g = Mem::down(gdinp), dw_g = Mem::down(gdw);
  expect_close_t<T>(rdinp, dinp_g, "rmsnorm_backward dinp" + tag);
  expect_close_t<T>(rdw, dw_g, "rmsnorm_backward dweight" + tag);
  auto gdinp2 = Mem::template up<T>(dinp0);
  auto gdw2 = Mem::template up<float>(dw0);
  Mem::rerun_same(
      dinp_g,
      [&] {
        cuda::rmsnorm_backward(gdinp2.get(), gdw2.get(), gdout.get(), gx.get(), gw.get(), gr.get(),
                               N, C, scratch.get(), st);
      },
      [&] { return Mem::down(gdinp2); }, "rmsnorm_backward dinp" + tag);
  expect_same_bits(dw_g, Mem::down(gdw2), "rmsnorm_backward dweight, second run" + tag);

  // Fused residual + RMSNorm, normalising the residual as stored (rounded to T).
  std::vector<float> resf(NC);
  for (std::size_t i = 0; i < NC; ++i) resf[i] = float(double(x[i]) + double(y[i]));
  const auto resd = to_d(representable<T>(resf));
  std::vector<double> out2(NC), rrms2(static_cast<std::size_t>(N));
  cpu::rmsnorm_forward(out2.data(), rrms2.data(), resd.data(), wd.data(), N, C, double(eps));
  auto gres = Mem::template poisoned<T>(NC), gout2 = Mem::template poisoned<T>(NC);
  cuda::residual_rmsnorm_forward(gres.get(), gout2.get(), grr.get(), gx.get(), gy.get(), gw.get(),
                                 N, C, eps, st);
  const auto out2_g = Mem::down(gout2);
  expect_close_t<T>(resd, Mem::down(gres), "residual_rmsnorm residual" + tag);
  expect_close_t<T>(out2, out2_g, "residual_rmsnorm out" + tag);
  expect_close_t<T>(rrms2, Mem::down(grr), "residual_rmsnorm rrms" + tag);
  auto gapply2 = Mem::template poisoned<T>(NC);
  cuda::rmsnorm_apply(gapply2.get(), gres.get(), gw.get(), grr.get(), N, C, st);
  expect_same_bits(out2_g, Mem::down(gapply2),
                   "rmsnorm_apply differs from residual_rmsnorm_forward" + tag);
}

// Rotary embedding with Llama 3 scaling on q and k of a grouped-query qkv
// buffer [B, T, (NH + 2 NKV) D]: out of place, in place (the engine's use),
// and the backward in place; v is left untouched.
template <typename T, class Mem> void check_rope(int B, int Tn, int NH, int NKV, int D) {
  cpu::RopeParams p;
  p.theta = 500000.0;
  p.llama3 = true;
  p.factor = 32.0;
  p.original_max_position = 64;
  const int H = NH + NKV, ld = (NH + 2 * NKV) * D, half = D / 2;
  const std::size_t n = std::size_t(B) * Tn * ld, tab = std::size_t(Tn) * half;
  const auto x = representable<T>(rand_vec(n, -2.0f, 2.0f));
  std::vector<float> cf(tab), sf(tab);
  cpu::rope_table(cf.data(), sf.data(), 0, Tn, D, p);
  // The reference rotates with the same fp32 table the kernel reads.
  const auto cd = to_d(cf), sd = to_d(sf), xd = to_d(x);
  std::vector<double> fwd = xd, bwd = xd;
  cpu::rope_forward(fwd.data(), xd.data(), cd.data(), sd.data(), B, Tn, H, D, ld);
  cpu::rope_backward(bwd.data(), xd.data(), cd.data(), sd.data(), B, Tn, H, D, ld);
  // The CPU backward added into its copy of x; the kernel overwrites in place
  // and leaves v as it was.
  for (std::size_t i = 0; i < n; ++i)
    if (int(i % std::size_t(ld)) < H * D) bwd[i] -= xd[i];
  const std::string tag = " B=" + std::to_string(B) + " T=" + std::to_string(Tn) +
                          " H=" + std::to_string(H) + " D=" + std::to_string(D);
  const auto st = Mem::stream();
  auto gc = Mem::template up<float>(cf), gs = Mem::template up<float>(sf);
  auto gx = Mem::template up<T>(x), gout = Mem::template up<T>(x);
  cuda::rope_forward(gout.get(), gx.get(), gc.get(), gs.get(), B, Tn, H, D, ld, st);
  const auto out_g = Mem::down(gout);
  expect_close_t<T>(fwd, out_g, "rope_forward" + tag);
  cuda::rope_forward(gx.get(), gx.get(), gc.get(), gs.get(), B, Tn, H, D, ld, st);
  expect_same_bits(out_g, Mem::down(gx), "rope_forward in place" + tag);
  auto gd = Mem::template up<T>(x);
  cuda::rope_backward(gd.get(), gd.get(), gc.get(), gs.get(), B, Tn, H, D, ld, st);
  expect_close_t<T>(bwd, Mem::down(gd), "rope_backward" + tag);
}

// SwiGLU forward and backward (overwriting) on gates from -12 to 8, where the
// sigmoid saturates at both ends.
template <typename T, class Mem> void check_swiglu(int N, int I) {
  const std::size_t NI = std::size_t(N) * I;
  const auto gu = representable<T>(rand_vec(2 * NI, -12.0f, 8.0f));
  const auto dout = representable<T>(rand_vec(NI));
  const auto gud = to_d(gu), doutd = to_d(dout);
  std::vector<double> out(NI), dgu(2 * NI, 0.0);
  cpu::swiglu_forward(out.data(), gud.data(), N, I);
  cpu::swiglu_backward(dgu.data(), doutd.data(), gud.data(), N, I);
  const std::string tag = " N=" + std::to_string(N) + " I=" + std::to_string(I);
  const auto st = Mem::stream();
  auto ggu = Mem::template up<T>(gu), gdout = Mem::template up<T>(dout);
  auto gout = Mem::template poisoned<T>(NI);
  auto gdgu = Mem::template poisoned<T>(2 * NI);
  cuda::swiglu_forward(gout.get(), ggu.get(), N, I, st);
  expect_close_t<T>(out, Mem::down(gout), "swiglu_forward" + tag);
  cuda::swiglu_backward(gdgu.get(), gdout.get(), ggu.get(), N, I, st);
  expect_close_t<T>(dgu, Mem::down(gdgu), "swiglu_backward" + tag);
}

} // namespace myelin::llama_op_check
