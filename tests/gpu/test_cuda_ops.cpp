// GPU parity tests: every CUDA kernel against the CPU reference (kernels/ops.h,
// evaluated in double on the same inputs), in fp32 and bf16 storage, at shapes
// that are and are not multiples of the block/pack sizes; plus end-to-end
// CUDA-engine vs CPU-engine training parity.
//
// Tolerances, element-wise: |gpu - ref| <= rtol*|ref| + atol*rms(ref)
//   fp32 storage: rtol = atol = 1e-5  (fp32 math vs double reference)
//   bf16 storage: rtol = atol = 2e-2  (inputs are rounded to bf16 first, so the
//                 reference sees exactly the GPU's inputs; outputs and
//                 intermediates stored in bf16 carry 2^-9 relative rounding)
// Outputs that a kernel overwrites are poisoned with NaN (0xFF bytes) before the
// call, so an element it forgets to write fails. Outputs that accumulate start
// from random values, identical on both sides.
// Without a CUDA device every test reports "skipped: no CUDA device".
#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numbers>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "runtime/model/config.h"
#include "runtime/model/engine.h"
#include "runtime/model/init.h"
#include "tests/common/bucket_check.h"
#include "tests/common/engine_check.h"
#include "tests/common/gqa_check.h"
#include "tests/common/kernel_check.h"
#include "tests/common/llama_op_check.h"
#include "tests/common/step_check.h"
#include "tests/common/tc_attention_check.h"
#include "tests/gpu/gpu_test.h"

namespace {

using myelin::cuda::bf16;
using namespace myelin::kernel_check;
using namespace myelin::engine_check;
using myelin::cuda::DeviceBuffer;

// A device buffer of T holding `v` (converted to T).
template <typename T> DeviceBuffer<T> up(const std::vector<float>& v) {
  std::vector<typename St<T>::Host> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = St<T>::enc(v[i]);
  DeviceBuffer<T> d(v.size());
  MYELIN_CUDA_CHECK(cudaMemcpy(d.get(), h.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
DeviceBuffer<int> up_int(const std::vector<int>& v) {
  DeviceBuffer<int> d(v.size());
  MYELIN_CUDA_CHECK(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(int), cudaMemcpyHostToDevice));
  return d;
}
template <typename T> DeviceBuffer<T> poisoned(std::size_t n) {
  DeviceBuffer<T> d(n);
  MYELIN_CUDA_CHECK(cudaMemset(d.get(), 0xff, n * sizeof(T)));
  return d;
}
template <typename T> std::vector<float> down(const DeviceBuffer<T>& d, std::size_t n = 0) {
  if (n == 0) n = d.size();
  MYELIN_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<typename St<T>::Host> h(n);
  MYELIN_CUDA_CHECK(cudaMemcpy(h.data(), d.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = St<T>::dec(h[i]);
  return v;
}

cudaStream_t stream0() { return nullptr; } // legacy default stream; tests sync via down()

template <typename T> class CudaOps : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(CudaOps, StorageTypes);

// ---- encoder ---------------------------------------------------------------------------------
TYPED_TEST(CudaOps, Encoder) {
  REQUIRE_GPU();
  using T = TypeParam;
  struct S {
    int B, Tn, C, V;
  };
  for (S s : {S{2, 7, 13, 50}, S{3, 33, 64, 100}, S{2, 64, 776, 300}}) {
    const int N = s.B * s.Tn, C = s.C;
    const auto wte = representable<T>(rand_vec(std::size_t(s.V) * C));
    const auto wpe = representable<T>(rand_vec(std::size_t(s.Tn) * C));
    std::vector<int> tok(N);
    std::uniform_int_distribution<int> ut(0, s.V - 1);
    for (auto& t : tok) t = ut(rng()) % 7 == 0 ? 3 : ut(rng()); // repeated tokens
    const auto dout = representable<T>(rand_vec(std::size_t(N) * C));
    const auto dwte0 = rand_vec(std::size_t(s.V) * C), dwpe0 = rand_vec(std::size_t(s.Tn) * C);

    std::vector<double> ref_out(std::size_t(N) * C);
    auto wte_d = to_d(wte), wpe_d = to_d(wpe), dout_d = to_d(dout);
    myelin::cpu::encoder_forward(ref_out.data(), tok.data(), wte_d.data(), wpe_d.data(), s.B, s.Tn,
                                 C);
    auto ref_dwte = to_d(dwte0), ref_dwpe = to_d(dwpe0);
    myelin::cpu::encoder_backward(ref_dwte.data(), ref_dwpe.data(), dout_d.data(), tok.data(), s.B,
                                  s.Tn, C, s.V);

    auto g_wte = up<T>(wte), g_wpe = up<T>(wpe), g_dout = up<T>(dout);
    auto g_tok = up_int(tok);
    auto g_out = poisoned<T>(std::size_t(N) * C);
    myelin::cuda::encoder_forward(g_out.get(), g_tok.get(), g_wte.get(), g_wpe.get(), s.B, s.Tn, C,
                                  stream0());
    expect_close_t<T>(ref_out, down(g_out), "encoder_forward C=" + std::to_string(C));

    myelin::cuda::EncoderBuckets bk;
    myelin::cuda::build_encoder_buckets(tok.data(), N, bk);
    auto b_tok = up_int(bk.tokens), b_off = up_int(bk.offsets), b_pos = up_int(bk.positions);
    auto g_dwte = up<float>(dwte0), g_dwpe = up<float>(dwpe0);
    myelin::cuda::encoder_backward(g_dwte.get(), g_dwpe.get(), g_dout.get(), b_tok.get(),
                                   b_off.get(), b_pos.get(), bk.num_buckets(), s.B, s.Tn, C,
                                   stream0());
    expect_close_t<T>(ref_dwte, down(g_dwte), "encoder_backward dwte");
    expect_close_t<T>(ref_dwpe, down(g_dwpe), "encoder_backward dwpe");
  }
}

// The token grouping built on the device equals the host's.
TEST(CudaOpsBuckets, DeviceBucketsMatchHost) {
  REQUIRE_GPU();
  myelin::bucket_check::expect_device_buckets_match_host([](const std::vector<int>& tok) {
    const int N = int(tok.size());
    auto g_tok = up_int(tok);
    auto btok = poisoned<int>(tok.size()), boff = poisoned<int>(tok.size() + 1),
         bpos = poisoned<int>(tok.size());
    DeviceBuffer<unsigned long long> keys(myelin::cuda::encoder_buckets_scratch(N));
    myelin::cuda::build_encoder_buckets_device(btok.get(), boff.get(), bpos.get(), g_tok.get(), N,
                                               keys.get(), stream0());
    MYELIN_CUDA_CHECK(cudaDeviceSynchronize());
    myelin::bucket_check::DeviceBuckets r;
    for (auto [v, d] : {std::pair{&r.tokens, &btok}, {&r.offsets, &boff}, {&r.positions, &bpos}}) {
      v->resize(d->size());
      MYELIN_CUDA_CHECK(
          cudaMemcpy(v->data(), d->get(), d->size() * sizeof(int), cudaMemcpyDeviceToHost));
    }
    return r;
  });
}

// ---- layernorm ------------------------------------------------------------------------------
TYPED_TEST(CudaOps, LayerNorm) {
  REQUIRE_GPU();
  using T = TypeParam;
  // C = 4096: the backward's largest C; N = 4100: more 8-row tiles than
  // backward blocks.
  for (auto [N, C] : {std::pair{7, 13}, std::pair{33, 96}, std::pair{64, 1600}, std::pair{5, 2000},
                      std::pair{600, 40}, std::pair{9, 4096}, std::pair{4100, 8}}) {
    const std::size_t NC = std::size_t(N) * C;
    const auto x = representable<T>(rand_vec(NC, -2.0f, 3.0f));
    const auto w = representable<T>(rand_vec(C, 0.5f, 1.5f));
    const auto b = representable<T>(rand_vec(C));
    const auto dout = representable<T>(rand_vec(NC));
    const auto dinp0 = representable<T>(rand_vec(NC));
    const auto dw0 = rand_vec(C), db0 = rand_vec(C);
    auto xd = to_d(x), wd = to_d(w), bd = to_d(b), doutd = to_d(dout);
    std::vector<double> out(NC), mean(N), rstd(N);
    myelin::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), xd.data(), wd.data(),
                                   bd.data(), N, C);
    auto rdinp = to_d(dinp0), rdw = to_d(dw0), rdb = to_d(db0);
    myelin::cpu::layernorm_backward(rdinp.data(), rdw.data(), rdb.data(), doutd.data(), xd.data(),
                                    wd.data(), mean.data(), rstd.data(), N, C);

    auto gx = up<T>(x), gw = up<T>(w), gb = up<T>(b), gdout = up<T>(dout);
    auto gout = poisoned<T>(NC);
    auto gmean = poisoned<float>(N), grstd = poisoned<float>(N);
    myelin::cuda::layernorm_forward(gout.get(), gmean.get(), grstd.get(), gx.get(), gw.get(),
                                    gb.get(), N, C, stream0());
    const std::string tag = " N=" + std::to_string(N) + " C=" + std::to_string(C);
    expect_close_t<T>(out, down(gout), "layernorm_forward out" + tag);
    expect_close_t<T>(mean, down(gmean), "layernorm_forward mean" + tag);
    expect_close_t<T>(rstd, down(grstd), "layernorm_forward rstd" + tag);
    // Recomputation from the saved statistics reproduces the forward bit for bit.
    auto gapply = poisoned<T>(NC);
    myelin::cuda::layernorm_apply(gapply.get(), gx.get(), gw.get(), gb.get(), gmean.get(),
                                  grstd.get(), N, C, stream0());
    const auto fwd_bits = down(gout), apply_bits = down(gapply);
    EXPECT_EQ(0, std::memcmp(fwd_bits.data(), apply_bits.data(), NC * sizeof(float)))
        << "layernorm_apply differs from layernorm_forward" << tag;

    // Backward uses the reference statistics so that only the backward is tested.
    std::vector<float> meanf(mean.begin(), mean.end()), rstdf(rstd.begin(), rstd.end());
    auto gm = up<float>(meanf), gr = up<float>(rstdf);
    auto gdinp = up<T>(dinp0);
    auto gdw = up<float>(dw0), gdb = up<float>(db0);
    DeviceBuffer<float> scratch(myelin::cuda::layernorm_backward_scratch(N, C));
    myelin::cuda::layernorm_backward(gdinp.get(), gdw.get(), gdb.get(), gdout.get(), gx.get(),
                                     gw.get(), gm.get(), gr.get(), N, C, scratch.get(), stream0());
    expect_close_t<T>(rdinp, down(gdinp), "layernorm_backward dinp" + tag);
    expect_close_t<T>(rdw, down(gdw), "layernorm_backward dweight" + tag);
    expect_close_t<T>(rdb, down(gdb), "layernorm_backward dbias" + tag);
    {
      // Deterministic: a second run from the same inputs gives the same bits.
      const auto dinp1 = down(gdinp), dw1 = down(gdw), db1 = down(gdb);
      auto gdinp2 = up<T>(dinp0);
      auto gdw2 = up<float>(dw0), gdb2 = up<float>(db0);
      myelin::cuda::layernorm_backward(gdinp2.get(), gdw2.get(), gdb2.get(), gdout.get(), gx.get(),
                                       gw.get(), gm.get(), gr.get(), N, C, scratch.get(),
                                       stream0());
      EXPECT_EQ(dinp1, down(gdinp2)) << "layernorm_backward dinp not deterministic" << tag;
      EXPECT_EQ(dw1, down(gdw2)) << "layernorm_backward dweight not deterministic" << tag;
      EXPECT_EQ(db1, down(gdb2)) << "layernorm_backward dbias not deterministic" << tag;
    }

    // Fused residual + layernorm: residual = x + y, LN(residual).
    const auto y = representable<T>(rand_vec(NC));
    std::vector<double> res(NC), out2(NC), mean2(N), rstd2(N);
    for (std::size_t i = 0; i < NC; ++i) res[i] = double(x[i]) + double(y[i]);
    // bf16 stores the residual rounded; the reference normalises the rounded value too.
    std::vector<float> resf(res.begin(), res.end());
    resf = representable<T>(resf);
    auto resr = to_d(resf);
    myelin::cpu::layernorm_forward(out2.data(), mean2.data(), rstd2.data(), resr.data(), wd.data(),
                                   bd.data(), N, C);
    auto gy = up<T>(y);
    auto gres = poisoned<T>(NC), gout2 = poisoned<T>(NC);
    MYELIN_CUDA_CHECK(cudaMemset(grstd.get(), 0xff, N * sizeof(float)));
    myelin::cuda::residual_layernorm_forward(gres.get(), gout2.get(), gmean.get(), grstd.get(),
                                             gx.get(), gy.get(), gw.get(), gb.get(), N, C,
                                             stream0());
    expect_close_t<T>(res, down(gres), "residual_layernorm residual" + tag);
    expect_close_t<T>(out2, down(gout2), "residual_layernorm out" + tag);
    expect_close_t<T>(rstd2, down(grstd), "residual_layernorm rstd" + tag);
    myelin::cuda::layernorm_apply(gapply.get(), gres.get(), gw.get(), gb.get(), gmean.get(),
                                  grstd.get(), N, C, stream0());
    const auto fused_bits = down(gout2), apply2_bits = down(gapply);
    EXPECT_EQ(0, std::memcmp(fused_bits.data(), apply2_bits.data(), NC * sizeof(float)))
        << "layernorm_apply differs from residual_layernorm_forward" << tag;
  }
}

// ---- matmul ---------------------------------------------------------------------------------
TYPED_TEST(CudaOps, Matmul) {
  REQUIRE_GPU();
  using T = TypeParam;
  myelin::cuda::MatmulContext ctx;
  struct S {
    int N, IC, OC;
    bool bias;
  };
  for (S s :
       {S{7, 13, 17, true}, S{64, 96, 200, true}, S{33, 128, 384, false}, S{130, 64, 48, true}}) {
    const std::size_t NI = std::size_t(s.N) * s.IC, NO = std::size_t(s.N) * s.OC,
                      OI = std::size_t(s.OC) * s.IC;
    const auto x = representable<T>(rand_vec(NI));
    const auto w = representable<T>(rand_vec(OI));
    const auto b = representable<T>(rand_vec(s.OC));
    const auto dout = representable<T>(rand_vec(NO));
    const auto dw0 = rand_vec(OI), db0 = rand_vec(s.OC);
    auto xd = to_d(x), wd = to_d(w), bd = to_d(b), doutd = to_d(dout);
    std::vector<double> out(NO);
    myelin::cpu::matmul_forward(out.data(), xd.data(), wd.data(), s.bias ? bd.data() : nullptr, s.N,
                                s.IC, s.OC);
    std::vector<double> dinp(NI, 0.0);
    auto rdw = to_d(dw0), rdb = to_d(db0);
    myelin::cpu::matmul_backward(dinp.data(), rdw.data(), s.bias ? rdb.data() : nullptr,
                                 doutd.data(), xd.data(), wd.data(), s.N, s.IC, s.OC);
    const std::string tag =
        " N=" + std::to_string(s.N) + " IC=" + std::to_string(s.IC) + " OC=" + std::to_string(s.OC);

    auto gx = up<T>(x), gw = up<T>(w), gb = up<T>(b), gdout = up<T>(dout);
    auto gout = poisoned<T>(NO);
    myelin::cuda::matmul_forward(ctx, gout.get(), static_cast<T*>(nullptr), gx.get(), gw.get(),
                                 s.bias ? gb.get() : nullptr, s.N, s.IC, s.OC, false, stream0());
    expect_close_t<T>(out, down(gout), "matmul_forward" + tag);

    const auto rdw_once = rdw, rdb_once = rdb;
    auto gdinp = poisoned<T>(NI);
    auto gdw = up<float>(dw0), gdb = up<float>(db0);
    DeviceBuffer<float> scratch(myelin::cuda::matmul_dbias_scratch(s.N, s.OC));
    myelin::cuda::matmul_backward(ctx, gdinp.get(), gdw.get(), s.bias ? gdb.get() : nullptr,
                                  gdout.get(), gx.get(), gw.get(), static_cast<const T*>(nullptr),
                                  s.N, s.IC, s.OC, 1.0f, scratch.get(), stream0());
    expect_close_t<T>(dinp, down(gdinp), "matmul_backward dinp" + tag);
    expect_close_t<T>(rdw, down(gdw), "matmul_backward dweight" + tag);
    if (s.bias) expect_close_t<T>(rdb, down(gdb), "matmul_backward dbias" + tag);
    // A second call accumulates (gradient accumulation over micro-batches):
    // scale 1 takes the BGRADB epilogue where cuBLASLt offers it, scale 0.5
    // the separate reduction; both must add to dweight and dbias.
    for (float sc : {1.0f, 0.5f}) {
      myelin::cuda::matmul_backward(ctx, gdinp.get(), gdw.get(), s.bias ? gdb.get() : nullptr,
                                    gdout.get(), gx.get(), gw.get(), static_cast<const T*>(nullptr),
                                    s.N, s.IC, s.OC, sc, scratch.get(), stream0());
      for (std::size_t i = 0; i < rdw.size(); ++i) rdw[i] += sc * (rdw_once[i] - double(dw0[i]));
      for (std::size_t i = 0; i < rdb.size(); ++i) rdb[i] += sc * (rdb_once[i] - double(db0[i]));
      const std::string t2 = tag + " second call, scale " + std::to_string(sc);
      expect_close_t<T>(rdw, down(gdw), "matmul_backward dweight accumulates" + t2);
      if (s.bias) expect_close_t<T>(rdb, down(gdb), "matmul_backward dbias accumulates" + t2);
    }

    // GeLU epilogue (cuBLASLt where the shape allows it): out = gelu(x W^T + b),
    // pre_gelu = x W^T + b; backward through it with the DGELU epilogue.
    // Tolerance: cuBLASLt documents its GELU epilogues as the tanh GeLU,
    // 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), without an accuracy
    // figure. The least accurate tanh it may evaluate is the hardware's,
    // tanh.approx.f32, which the PTX ISA ("Floating Point Instructions: tanh")
    // documents to a maximum relative error of 2^-11 (measured on sm_75 and
    // later about 1.1e-5, so the bound is loose); |tanh| <= 1 makes it an
    // absolute bound too: eps below. To first order in that error,
    //   GELU:  |d out| <= 0.5 |x| eps
    //   DGELU: gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) u', t = tanh(u),
    //          u' = sqrt(2/pi) (1 + 0.134145 x^2); |d gelu'/dt| = |0.5 - x t u'|
    //          <= 0.5 + |x| u', so |d dx| <= |g| (0.5 + |x| u') eps, g = dy W
    // on top of the storage type's tolerance, which covers the fp32 arithmetic
    // around the tanh (pre_gelu is a plain matmul result: that tolerance alone).
    const double eps = std::exp2(-11.0);
    std::vector<double> act(NO), act_tol(NO);
    myelin::cpu::gelu_forward(act.data(), out.data(), NO);
    for (std::size_t i = 0; i < NO; ++i) act_tol[i] = 0.5 * std::fabs(out[i]) * eps;
    auto gpre = poisoned<T>(NO), gact = poisoned<T>(NO);
    myelin::cuda::matmul_forward(ctx, gact.get(), gpre.get(), gx.get(), gw.get(),
                                 s.bias ? gb.get() : nullptr, s.N, s.IC, s.OC, true, stream0());
    expect_close_t<T>(out, down(gpre), "matmul_forward+gelu pre" + tag);
    expect_close(act, down(gact), St<T>::rtol, St<T>::atol,
                 std::string(St<T>::name) + " matmul_forward+gelu out" + tag, act_tol);
    // dx = (dy @ W2) * gelu'(pre) with W2 [OC2=IC?]: reuse W as [OC, IC] mapping
    // dout[N,OC] -> dinp[N,IC], with pre_gelu of shape [N,IC] (= x here).
    std::vector<double> dlin(NI, 0.0), dgel(NI, 0.0), dgel_tol(NI);
    auto dummy_dw = to_d(dw0);
    myelin::cpu::matmul_backward(dlin.data(), dummy_dw.data(), static_cast<double*>(nullptr),
                                 doutd.data(), xd.data(), wd.data(), s.N, s.IC, s.OC);
    myelin::cpu::gelu_backward(dgel.data(), xd.data(), dlin.data(), NI);
    for (std::size_t i = 0; i < NI; ++i) {
      const double x = xd[i], du = std::sqrt(2.0 / std::numbers::pi) * (1.0 + 0.134145 * x * x);
      dgel_tol[i] = std::fabs(dlin[i]) * (0.5 + std::fabs(x) * du) * eps;
    }
    auto gdx = poisoned<T>(NI);
    myelin::cuda::matmul_backward(ctx, gdx.get(), static_cast<float*>(nullptr),
                                  static_cast<float*>(nullptr), gdout.get(), gx.get(), gw.get(),
                                  gx.get(), s.N, s.IC, s.OC, 1.0f, nullptr, stream0());
    expect_close(dgel, down(gdx), St<T>::rtol, St<T>::atol,
                 std::string(St<T>::name) + " matmul_backward+dgelu" + tag, dgel_tol);
  }
}

// ---- Llama kernels: RMSNorm, rotary embedding, SwiGLU (tests/common/llama_op_check.h) ---------
struct GpuMem {
  template <typename T> static DeviceBuffer<T> up(const std::vector<float>& v) {
    return ::up<T>(v);
  }
  template <typename T> static DeviceBuffer<T> poisoned(std::size_t n) { return ::poisoned<T>(n); }
  template <typename T> static std::vector<float> down(const DeviceBuffer<T>& d) {
    return ::down(d);
  }
  template <typename T> static void poison(const DeviceBuffer<T>& d) {
    MYELIN_CUDA_CHECK(cudaMemset(d.get(), 0xff, d.size() * sizeof(T)));
  }
  static cudaStream_t stream() { return stream0(); }
  // Deterministic kernels: a second run gives the same bits.
  template <typename Run, typename Read>
  static void rerun_same(const std::vector<float>& first, Run run, Read read,
                         const std::string& what) {
    run();
    expect_same_bits(first, read(), what + ": not deterministic");
  }
};

TYPED_TEST(CudaOps, RmsNorm) {
  REQUIRE_GPU();
  for (auto [N, C] : {std::pair{7, 13}, std::pair{33, 96}, std::pair{64, 2048}, std::pair{5, 8192},
                      std::pair{600, 40}, std::pair{4100, 8}})
    myelin::llama_op_check::check_rmsnorm<TypeParam, GpuMem>(N, C, 1e-5f);
}

TYPED_TEST(CudaOps, Rope) {
  REQUIRE_GPU();
  myelin::llama_op_check::check_rope<TypeParam, GpuMem>(2, 7, 4, 2, 8);
  myelin::llama_op_check::check_rope<TypeParam, GpuMem>(2, 300, 32, 8, 64);
  myelin::llama_op_check::check_rope<TypeParam, GpuMem>(1, 77, 4, 2, 128);
}

TYPED_TEST(CudaOps, Swiglu) {
  REQUIRE_GPU();
  for (auto [N, I] : {std::pair{7, 13}, std::pair{33, 96}, std::pair{128, 8192}})
    myelin::llama_op_check::check_swiglu<TypeParam, GpuMem>(N, I);
}

// ---- attention ------------------------------------------------------------------------------
TYPED_TEST(CudaOps, Attention) {
  REQUIRE_GPU();
  using T = TypeParam;
  // The last three are grouped-query (2 and 4 query heads per kv head, one kv head).
  using S = GqaShape; // B, T, NH, NKV, D
  for (S s : {S{2, 7, 4, 4, 8}, S{1, 77, 2, 2, 64}, S{2, 45, 2, 2, 128}, S{1, 64, 2, 2, 96},
              S{1, 1, 1, 1, 64}, S{1, 130, 1, 1, 64}, S{2, 37, 4, 2, 16}, S{1, 200, 4, 1, 128},
              S{2, 77, 8, 2, 128}}) {
    const GqaCase<T> a(s);
    const auto &out = a.out, &dqkv = a.dqkv;
    const auto& tag = a.tag;
    const std::size_t NC = s.out_elems();
    auto gqkv = up<T>(a.qkv), gdout = up<T>(a.dout);
    auto gout = poisoned<T>(NC);
    auto glse = poisoned<float>(s.lse_elems());
    myelin::cuda::attention_forward(gout.get(), glse.get(), gqkv.get(), s.B, s.Tn, s.NH, s.NKV, s.D,
                                    stream0());
    const auto out_g = down(gout);
    expect_close_t<T>(out, out_g, "attention_forward" + tag);
    for (float v : down(glse)) ASSERT_TRUE(std::isfinite(v)) << "lse not written" << tag;

    // Backward from the GPU's own forward output (O enters through Drow = dO.O).
    auto gdqkv = poisoned<T>(a.qkv.size());
    DeviceBuffer<float> scratch(s.lse_elems());
    myelin::cuda::attention_backward(gdqkv.get(), scratch.get(), gdout.get(), gqkv.get(),
                                     gout.get(), glse.get(), s.B, s.Tn, s.NH, s.NKV, s.D,
                                     stream0());
    const auto d1 = down(gdqkv);
    expect_close_t<T>(dqkv, d1, "attention_backward" + tag);
    // Deterministic: a second run is bit-identical.
    myelin::cuda::attention_backward(gdqkv.get(), scratch.get(), gdout.get(), gqkv.get(),
                                     gout.get(), glse.get(), s.B, s.Tn, s.NH, s.NKV, s.D,
                                     stream0());
    const auto d2 = down(gdqkv);
    EXPECT_EQ(0, std::memcmp(d1.data(), d2.data(), d1.size() * sizeof(float)))
        << "attention_backward not deterministic" << tag;
  }
}

// Tensor-core attention (tests/common/tc_attention_check.h).
void check_tc_attention(const GqaShape& s, bool with_fma) {
  myelin::tc_attention_check::check_tc_attention<GpuMem>(s, with_fma);
}

TEST(CudaOpsTc, Attention) {
  REQUIRE_GPU();
  using T = bf16;
  namespace cu = myelin::cuda;
  EXPECT_TRUE(cu::attention_tc_supported(2, 2, 64));
  EXPECT_TRUE(cu::attention_tc_supported(4, 1, 128));
  EXPECT_FALSE(cu::attention_tc_supported(4, 3, 64));
  EXPECT_FALSE(cu::attention_tc_supported(2, 2, 96));
  {
    auto q = poisoned<T>(4 * 4 * 96), o = poisoned<T>(4 * 2 * 96), g = poisoned<T>(4 * 4 * 96);
    auto l = poisoned<float>(8), sc = poisoned<float>(8);
    EXPECT_THROW(cu::attention_forward_tc(o.get(), l.get(), q.get(), 1, 4, 2, 1, 96, stream0()),
                 std::invalid_argument);
    EXPECT_THROW(cu::attention_backward_tc(g.get(), sc.get(), o.get(), q.get(), o.get(), l.get(), 1,
                                           4, 2, 1, 96, stream0()),
                 std::invalid_argument);
  }
  // T = 1, 7, 77, 130, 200, 257, 1024; D = 64, 128; NKV = NH, NH/2, 1.
  for (int D : {64, 128}) {
    for (GqaShape s : {GqaShape{1, 1, 4, 2, D}, GqaShape{2, 7, 4, 1, D}, GqaShape{1, 77, 4, 2, D},
                       GqaShape{2, 130, 4, 1, D}, GqaShape{1, 200, 4, 2, D},
                       GqaShape{1, 257, 8, 2, D}, GqaShape{1, 1024, 2, 1, D}})
      check_tc_attention(s, false);
    for (GqaShape s :
         {GqaShape{2, 77, 2, 2, D}, GqaShape{1, 257, 4, 4, D}, GqaShape{1, 130, 8, 2, D}})
      check_tc_attention(s, true);
  }
}

// ---- gelu, residual ---------------------------------------------------------------------------
TYPED_TEST(CudaOps, GeluResidual) {
  REQUIRE_GPU();
  using T = TypeParam;
  for (std::size_t n : {std::size_t(1), std::size_t(1001), std::size_t(4096 + 3)}) {
    const auto x = representable<T>(rand_vec(n, -4.0f, 4.0f));
    const auto y = representable<T>(rand_vec(n));
    const auto g = representable<T>(rand_vec(n));
    const auto a0 = representable<T>(rand_vec(n));
    auto xd = to_d(x), yd = to_d(y), gd = to_d(g);
    std::vector<double> gf(n), gb(n, 0.0), rf(n);
    myelin::cpu::gelu_forward(gf.data(), xd.data(), n);
    myelin::cpu::gelu_backward(gb.data(), xd.data(), gd.data(), n);
    myelin::cpu::residual_forward(rf.data(), xd.data(), yd.data(), n);
    auto ra = to_d(a0), rb = to_d(x);
    myelin::cpu::residual_backward(ra.data(), rb.data(), gd.data(), n);
    const std::string tag = " n=" + std::to_string(n);

    auto gx = up<T>(x), gy = up<T>(y), gg = up<T>(g);
    auto o = poisoned<T>(n);
    myelin::cuda::gelu_forward(o.get(), gx.get(), n, stream0());
    expect_close_t<T>(gf, down(o), "gelu_forward" + tag);
    auto o2 = poisoned<T>(n);
    myelin::cuda::gelu_backward(o2.get(), gx.get(), gg.get(), n, stream0());
    expect_close_t<T>(gb, down(o2), "gelu_backward" + tag);
    // in place: dinp == dout
    auto gin = up<T>(g);
    myelin::cuda::gelu_backward(gin.get(), gx.get(), gin.get(), n, stream0());
    expect_close_t<T>(gb, down(gin), "gelu_backward in place" + tag);
    auto o3 = poisoned<T>(n);
    myelin::cuda::residual_forward(o3.get(), gx.get(), gy.get(), n, stream0());
    expect_close_t<T>(rf, down(o3), "residual_forward" + tag);
    auto ga = up<T>(a0), gbb = up<T>(x);
    myelin::cuda::residual_backward(ga.get(), gbb.get(), gg.get(), n, stream0());
    expect_close_t<T>(ra, down(ga), "residual_backward da" + tag);
    expect_close_t<T>(rb, down(gbb), "residual_backward db" + tag);
  }
}

// ---- classifier ---------------------------------------------------------------------------------
TYPED_TEST(CudaOps, Classifier) {
  REQUIRE_GPU();
  using T = TypeParam;
  struct S {
    int N, V, Vp;
  };
  for (S s : {S{5, 50, 64}, S{3, 1000, 1003}, S{4, 50257, 50304}}) {
    const std::size_t NV = std::size_t(s.N) * s.Vp;
    const auto logits = representable<T>(rand_vec(NV, -4.0f, 4.0f));
    std::vector<int> tgt(s.N);
    for (int n = 0; n < s.N; ++n) tgt[n] = int((n * 7919 + 13) % s.V);
    const float dloss = 1.0f / float(s.N);
    auto ld = to_d(logits);
    std::vector<double> losses(s.N), dl(NV);
    myelin::cpu::classifier_forward_backward(losses.data(), dl.data(), ld.data(), tgt.data(), s.N,
                                             s.V, s.Vp, double(dloss));
    const std::string tag = " V=" + std::to_string(s.V) + " Vp=" + std::to_string(s.Vp);
    auto gl = up<T>(logits);
    auto gt = up_int(tgt);
    auto gloss = poisoned<float>(s.N);
    // loss only: logits must stay untouched
    myelin::cuda::classifier_forward_backward(gloss.get(), gl.get(), gt.get(), s.N, s.V, s.Vp,
                                              dloss, false, stream0());
    expect_close_t<T>(losses, down(gloss), "classifier losses (no grad)" + tag);
    expect_close(to_d(logits), down(gl), 0.0, 0.0, "classifier logits untouched" + tag);
    auto gloss2 = poisoned<float>(s.N);
    myelin::cuda::classifier_forward_backward(gloss2.get(), gl.get(), gt.get(), s.N, s.V, s.Vp,
                                              dloss, true, stream0());
    expect_close_t<T>(losses, down(gloss2), "classifier losses" + tag);
    expect_close_t<T>(dl, down(gl), "classifier dlogits" + tag);
  }
}

// ---- AdamW
// ---------------------------------------------------------------------------------------
TYPED_TEST(CudaOps, AdamW) {
  REQUIRE_GPU();
  using T = TypeParam;
  const std::size_t n = 10007;
  const auto p0 = rand_vec(n), g = rand_vec(n), m0 = rand_vec(n, -0.1f, 0.1f),
             v0 = rand_vec(n, 0.001f, 0.1f);
  const myelin::cuda::AdamWArgs a{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, 0};
  // fp32 CPU reference (the update is defined in fp32).
  auto rp = p0, rm = m0, rv = v0;
  myelin::cpu::adamw_update(
      rp.data(), g.data(), rm.data(), rv.data(), n,
      myelin::cpu::AdamWParams{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.t});
  auto gg = up<float>(g), gm = up<float>(m0), gv = up<float>(v0);
  if constexpr (std::is_same<T, float>::value) {
    auto gp = up<float>(p0);
    myelin::cuda::adamw_update<float>(gp.get(), nullptr, gg.get(), gm.get(), gv.get(), n, a,
                                      stream0());
    expect_close(to_d(rp), down(gp), 1e-5, 1e-6, "adamw params");
  } else {
    auto master = up<float>(p0);
    auto gp = poisoned<bf16>(n);
    myelin::cuda::adamw_update<bf16>(gp.get(), master.get(), gg.get(), gm.get(), gv.get(), n, a,
                                     stream0());
    const auto mp = down(master);
    expect_close(to_d(rp), mp, 1e-5, 1e-6, "adamw master");
    const auto pb = down(gp);
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_EQ(bf16_bits(mp[i]), bf16_bits(pb[i])) << "bf16 params not rounded master at " << i;
    // Stochastic rounding: each value is one of the two neighbouring bf16 values.
    auto master2 = up<float>(p0), gm2 = up<float>(m0), gv2 = up<float>(v0);
    myelin::cuda::AdamWArgs sr = a;
    sr.seed = 42;
    myelin::cuda::adamw_update<bf16>(gp.get(), master2.get(), gg.get(), gm2.get(), gv2.get(), n, sr,
                                     stream0());
    const auto ps = down(gp);
    std::size_t up_count = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float lo = bf16_value(bf16_bits(mp[i]));
      ASSERT_LE(std::fabs(ps[i] - mp[i]), std::fabs(mp[i]) * (1.0f / 128.0f)) << i;
      if (ps[i] != lo) ++up_count;
    }
    EXPECT_GT(up_count, 0u);
  }
  expect_close(to_d(rm), down(gm), 1e-5, 1e-6, "adamw m");
  expect_close(to_d(rv), down(gv), 1e-5, 1e-6, "adamw v");
}

// ---- global norm
// ---------------------------------------------------------------------------------
TYPED_TEST(CudaOps, SumSquaresAndScale) {
  REQUIRE_GPU();
  using T = TypeParam;
  for (std::size_t n : {std::size_t(1), std::size_t(1000), (std::size_t(1) << 20) + 7}) {
    const auto x = representable<T>(rand_vec(n));
    auto xd = to_d(x);
    const double ref = myelin::cpu::sum_squares(xd.data(), n);
    auto gx = up<T>(x);
    DeviceBuffer<double> out(1), scratch(myelin::cuda::kSumSquaresBlocks);
    myelin::cuda::sum_squares(out.get(), gx.get(), n, scratch.get(), stream0());
    double got = 0.0, got2 = 0.0;
    MYELIN_CUDA_CHECK(cudaMemcpy(&got, out.get(), sizeof(double), cudaMemcpyDeviceToHost));
    myelin::cuda::sum_squares(out.get(), gx.get(), n, scratch.get(), stream0());
    MYELIN_CUDA_CHECK(cudaMemcpy(&got2, out.get(), sizeof(double), cudaMemcpyDeviceToHost));
    EXPECT_NEAR(got, ref, 1e-10 * ref + 1e-30) << "n=" << n;
    EXPECT_EQ(got, got2) << "sum_squares not deterministic";
    myelin::cuda::scale_inplace(gx.get(), n, 0.5f, stream0());
    std::vector<double> sref(xd);
    myelin::cpu::scale_inplace(sref.data(), n, 0.5);
    expect_close_t<T>(sref, down(gx), "scale_inplace n=" + std::to_string(n));
  }
}

// ---- engine parity
// --------------------------------------------------------------------------------
TEST(CudaEngine, MatchesCpuEngineFp32) {
  REQUIRE_GPU();
  auto gpu = cuda_engine(tiny_config(), "fp32");
  expect_fp32_matches_cpu_engine(*gpu, 10);
}

// The trainer's one-sync step (loss, norm and clipping kept on the device,
// uploads through page-locked staging, the token grouping on the device, one
// wait at end_step) gives the same bits as the plain step, fp32 and bf16.
TEST(CudaEngine, OneSyncStepMatchesPlainStep) {
  REQUIRE_GPU();
  for (const char* dtype : {"fp32", "bf16"})
    for (const auto& c : {tiny_config(), tiny_llama_config()}) {
      SCOPED_TRACE(std::string(dtype) + (c.llama() ? " llama" : " gpt2"));
      myelin::step_check::expect_one_sync_steps_match_plain([&] { return cuda_engine(c, dtype); },
                                                            c, 5, [](int, bool) {});
    }
}

// CUDA graphs (the default) change no bit against launching every kernel
// from the host (MYELIN_CUDA_GRAPHS=0): 10 training steps, eval_loss, another
// shape and dloss, a two-stage pipeline, and a backward hook (one graph per
// layer); GPT-2 and Llama, fp32 and bf16 (tests/common/engine_check.h).
TEST(CudaEngine, GraphsAreBitIdentical) {
  REQUIRE_GPU();
  for (const char* dtype : {"fp32", "bf16"})
    for (const auto& c : {tiny_config(), tiny_llama_config()})
      for (const bool hook : {false, true}) {
        const std::string what =
            std::string(dtype) + (c.llama() ? " llama" : " gpt2") + (hook ? " with a hook" : "");
        SCOPED_TRACE(what);
        GraphRun plain, graphs;
        {
          EnvScope env("MYELIN_CUDA_GRAPHS", "0");
          plain = graph_run(c, dtype, 10, hook);
        }
        {
          EnvScope env("MYELIN_CUDA_GRAPHS", "1");
          graphs = graph_run(c, dtype, 10, hook);
        }
        EXPECT_EQ(plain.graphs, 0u);
        EXPECT_EQ(graphs.graphs, graph_run_keys(c, hook)) << "every key captured";
        expect_same_run(plain, graphs, what);
      }
}

TEST(CudaEngine, Bf16TrainsCloseToFp32) {
  REQUIRE_GPU();
  const auto lb = expect_bf16_close_to_fp32(tiny_config(), 10, /*clip=*/true);
  EXPECT_LT(lb.back(), lb.front());
}

// --recompute 1 and 2 give the same bits as storing every activation: losses,
// gradient norms, the last gradients and parameters after 4 steps, fp32 and
// bf16; without GeLU fusion, which --recompute 0 uses by default in bf16.
TEST(CudaEngine, RecomputeIsBitIdentical) {
  REQUIRE_GPU();
  EnvScope env("MYELIN_CUDA_GELU_FUSION", "0");
  expect_recompute_bit_identical(4, /*clip=*/true);
}

// GeLU in the cuBLASLt epilogues (the bf16 default; MYELIN_CUDA_GELU_FUSION=1
// in fp32) trains like the separate kernels (=0) over 10 steps. Tolerance on
// the losses: bf16 1e-2 relative (as for the other bf16 comparisons); fp32
// 1e-3, an estimate with margin rather than a bound: the fused GeLU may differ
// by 0.5 |x| 2^-11 (tanh.approx.f32, see the Matmul test), at most about
// 2.4e-4 of each activation.
TEST(CudaEngine, GeluFusionMatchesUnfused) {
  REQUIRE_GPU();
  const auto c = tiny_config();
  const auto params = perturbed_init(c);
  for (const char* dtype : {"fp32", "bf16"}) {
    const bool f32 = std::string(dtype) == "fp32";
    std::unique_ptr<myelin::Engine> plain, fused;
    {
      EnvScope env("MYELIN_CUDA_GELU_FUSION", "0");
      plain = cuda_engine(c, dtype);
    }
    {
      EnvScope env("MYELIN_CUDA_GELU_FUSION", f32 ? "1" : ""); // bf16: the default
      fused = cuda_engine(c, dtype);
    }
    plain->set_params(params);
    fused->set_params(params);
    const auto lp = train_losses(*plain, c, 10, nullptr, /*clip=*/true);
    const auto lf = train_losses(*fused, c, 10, nullptr, /*clip=*/true);
    const double rl = f32 ? 1e-3 : 1e-2;
    for (std::size_t i = 0; i < lp.size(); ++i)
      EXPECT_NEAR(lf[i], lp[i], rl * std::fabs(lp[i])) << dtype << " loss at step " << i + 1;
  }
}

// bf16 with head size 64 runs attention on tensor cores by default; it trains
// like the CUDA-core kernels (MYELIN_CUDA_ATTN=fma) and like fp32.
TEST(CudaEngine, TensorCoreAttentionTrainsLikeFma) {
  REQUIRE_GPU();
  const auto l = expect_tc_attention_trains_like_fma(10, /*clip=*/true);
  EXPECT_LT(l.tc.back(), l.tc.front());
}

// Two pipeline stages (layer 0 | layer 1) compute the same loss and layer
// gradients as the whole model.
TEST(CudaEngine, PipelineStagesMatchWholeModel) {
  REQUIRE_GPU();
  expect_pipeline_stages_match_whole_model(
      [](myelin::StageSpec st) { return cuda_engine(tiny_config(), "fp32", 0, st); });
}

// The Llama family (RMSNorm, rotary embedding, SwiGLU, grouped-query attention,
// untied head) through the same engine.
TEST(CudaEngine, LlamaMatchesCpuEngineFp32) {
  REQUIRE_GPU();
  const auto c = tiny_llama_config();
  auto gpu = cuda_engine(c, "fp32");
  expect_fp32_matches_cpu_engine(*gpu, 10, c);
}

TEST(CudaEngine, LlamaBf16TrainsCloseToFp32) {
  REQUIRE_GPU();
  const auto lb = expect_bf16_close_to_fp32(tiny_llama_config(), 10, /*clip=*/true);
  EXPECT_LT(lb.back(), lb.front());
}

TEST(CudaEngine, LlamaRecomputeIsBitIdentical) {
  REQUIRE_GPU();
  expect_recompute_bit_identical(4, /*clip=*/true, tiny_llama_config());
}

TEST(CudaEngine, LlamaTensorCoreAttentionTrainsLikeFma) {
  REQUIRE_GPU();
  const auto l = expect_tc_attention_trains_like_fma(10, /*clip=*/true, tiny_llama_config());
  EXPECT_LT(l.tc.back(), l.tc.front());
}

TEST(CudaEngine, LlamaPipelineStagesMatchWholeModel) {
  REQUIRE_GPU();
  const auto c = tiny_llama_config();
  expect_pipeline_stages_match_whole_model(
      [&c](myelin::StageSpec st) { return cuda_engine(c, "fp32", 0, st); }, c);
}

} // namespace
