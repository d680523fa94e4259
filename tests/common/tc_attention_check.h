// The check of the tensor-core attention kernels (attention_fa2.cu, bf16
// only, grouped-query) against the double references of gqa_check.h, and of
// their interchangeability with the FMA kernels (attention.cu), written once
// for the GPU tests (tests/gpu) and the CPU simulation (tests/sim).
//
// The backward is checked with the usual bf16 tolerance against the flash
// reference (same O, P and dS rounded to bf16 as MMA operands); against the
// exact CPU reference at 5e-2: rounding dS to bf16 (|dS| reaches ~10 while dQ,
// dK cancel to ~0.1) and Drow from a bf16 O put single elements of dQ, dK up
// to ~1.4x past the 2e-2 bf16 tolerance. Outputs are poisoned before every
// run, reruns included, so an element a kernel forgets to write fails.
//
// Mem is the test's device-memory policy, as in llama_op_check.h (up,
// poisoned, down, stream, rerun_same), plus
//   Mem::poison(buffer)              -> sets all bits of every element (NaN).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda/ops_cuda.h"
#include "tests/common/gqa_check.h"
#include "tests/common/kernel_check.h"

namespace myelin::tc_attention_check {

using namespace myelin::kernel_check;

template <class Mem> void check_tc_attention(const GqaShape& s, bool with_fma) {
  using T = bf16;
  const GqaCase<bf16> a(s);
  const auto& tag = a.tag;
  const auto st = Mem::stream();
  auto gqkv = Mem::template up<T>(a.qkv), gdout = Mem::template up<T>(a.dout);
  auto gout = Mem::template poisoned<T>(s.out_elems());
  auto glse = Mem::template poisoned<float>(s.lse_elems());
  auto fwd = [&] {
    Mem::poison(gout);
    Mem::poison(glse);
    cuda::attention_forward_tc(gout.get(), glse.get(), gqkv.get(), s.B, s.Tn, s.NH, s.NKV, s.D, st);
  };
  fwd();
  const auto out_g = Mem::down(gout);
  expect_close_t<T>(a.out, out_g, "attention_forward_tc" + tag);
  const auto lse_g = Mem::down(glse);
  for (float v : lse_g) ASSERT_TRUE(std::isfinite(v)) << "lse not written" << tag;
  // lse is fp32 math on the same bf16 inputs: much tighter than the bf16 outputs.
  expect_close(a.lse, lse_g, 1e-4, 1e-4, "attention_forward_tc lse" + tag);
  Mem::rerun_same(
      out_g, fwd, [&] { return Mem::down(gout); }, "attention_forward_tc" + tag);

  auto gdqkv = Mem::template poisoned<T>(s.qkv_elems());
  auto scratch = Mem::template poisoned<float>(s.lse_elems());
  auto bwd = [&] {
    Mem::poison(gdqkv);
    Mem::poison(scratch);
    cuda::attention_backward_tc(gdqkv.get(), scratch.get(), gdout.get(), gqkv.get(), gout.get(),
                                glse.get(), s.B, s.Tn, s.NH, s.NKV, s.D, st);
  };
  bwd();
  const auto d1 = Mem::down(gdqkv);
  expect_close_t<T>(a.flash_backward(s, out_g), d1, "attention_backward_tc" + tag);
  expect_close(a.dqkv, d1, 5e-2, 5e-2, "attention_backward_tc vs exact reference" + tag);
  Mem::rerun_same(
      d1, bwd, [&] { return Mem::down(gdqkv); }, "attention_backward_tc" + tag);

  if (!with_fma) return;
  // Interchangeable with the FMA kernels (grouped-query too), both ways.
  auto fout = Mem::template poisoned<T>(s.out_elems());
  auto flse = Mem::template poisoned<float>(s.lse_elems());
  cuda::attention_forward<T>(fout.get(), flse.get(), gqkv.get(), s.B, s.Tn, s.NH, s.NKV, s.D, st);
  const auto fout_g = Mem::down(fout);
  expect_close(a.lse, Mem::down(flse), 1e-4, 1e-4, "attention_forward (FMA) lse" + tag);
  auto gdqkv2 = Mem::template poisoned<T>(s.qkv_elems());
  cuda::attention_backward_tc(gdqkv2.get(), scratch.get(), gdout.get(), gqkv.get(), fout.get(),
                              flse.get(), s.B, s.Tn, s.NH, s.NKV, s.D, st);
  expect_close_t<T>(a.flash_backward(s, fout_g), Mem::down(gdqkv2),
                    "attention_backward_tc after FMA forward" + tag);
  auto gdqkv3 = Mem::template poisoned<T>(s.qkv_elems());
  cuda::attention_backward<T>(gdqkv3.get(), scratch.get(), gdout.get(), gqkv.get(), gout.get(),
                              glse.get(), s.B, s.Tn, s.NH, s.NKV, s.D, st);
  expect_close(a.dqkv, Mem::down(gdqkv3), 5e-2, 5e-2,
               "attention_backward (FMA) after TC forward" + tag);
}

} // namespace myelin::tc_attention_check
