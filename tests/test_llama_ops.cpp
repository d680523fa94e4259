// Tests of the CPU kernels of the Llama block (kernels/ops.h): RMSNorm, RoPE
// (with Llama 3 frequency scaling), SwiGLU and grouped-query attention.
//
// Each forward is compared with a double-precision reference written here from
// the definition (plain loops, libm): to 1e-13 relative to the output's scale
// (double instantiation). Each backward is checked against central finite
// differences of the double forward, the float instantiation against the
// double one, and a second backward call must double every gradient; the
// method and its tolerances are in tests/common/fd_check.h. Shapes are odd on
// purpose: T = 1, 7, 13 (and 70: two 64-row attention blocks), head sizes 8
// and 16, NH/NKV = 4/1, 4/2, 4/4, intermediate sizes that are not multiples of
// 8. Inputs are uniform(-1, 1) from a fixed-seed std::mt19937 unless noted.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/common/fd_check.h"

namespace {

using namespace myelin::cpu;
using namespace myelin::fd_check;

// Forward against the reference: |got - ref| <= 1e-13 * (|ref| + max|ref|).
void expect_matches_reference(const std::string& what, const Vec& got, const Vec& ref) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double mx = 0.0;
  for (double x : ref) mx = std::max(mx, std::fabs(x));
  for (std::size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR(got[i], ref[i], 1e-13 * (std::fabs(ref[i]) + mx)) << what << "[" << i << "]";
}

std::string shape_name(std::initializer_list<std::pair<const char*, int>> dims) {
  std::string s;
  for (const auto& [k, v] : dims) s += std::string(s.empty() ? "" : "_") + k + std::to_string(v);
  return s;
}

// ---------------------------------------------------------------------------
// RMSNorm
struct NormShape {
  int N, C;
};
class RmsNormTest : public ::testing::TestWithParam<NormShape> {};

TEST_P(RmsNormTest, ForwardBackward) {
  const int N = GetParam().N, C = GetParam().C;
  const double eps = 1e-5;
  std::mt19937 g(21);
  Vec inp = rand_vec(g, std::size_t(N) * C), w = rand_vec(g, C, 0.5, 1.5);
  Vec R = rand_vec(g, inp.size()), out(inp.size()), rrms(N);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rrms.data(), inp.data(), w.data(), N, C, eps);
    return dot(out, R);
  };
  loss();
  Vec ref(inp.size()), ref_r(N);
  for (int n = 0; n < N; ++n) {
    double ss = 0;
    for (int i = 0; i < C; ++i) ss += inp[n * C + i] * inp[n * C + i];
    ref_r[n] = 1.0 / std::sqrt(ss / C + eps);
    for (int i = 0; i < C; ++i) ref[n * C + i] = inp[n * C + i] * ref_r[n] * w[i];
  }
  expect_matches_reference("out", out, ref);
  expect_matches_reference("rrms", rrms, ref_r);
  const Vec rrms0 = rrms;

  // Recomputation gives the forward's bits.
  Vec again(out.size(), -7.0);
  rmsnorm_apply(again.data(), inp.data(), w.data(), rrms0.data(), N, C);
  EXPECT_EQ(again, out);

  Vec dinp(inp.size(), 0.0), dw(C, 0.0);
  rmsnorm_backward(dinp.data(), dw.data(), R.data(), inp.data(), w.data(), rrms0.data(), N, C);
  check_fd("dinp", inp, dinp, loss, g);
  check_fd("dweight", w, dw, loss, g);

  Vec dinp2 = dinp, dw2 = dw;
  rmsnorm_backward(dinp2.data(), dw2.data(), R.data(), inp.data(), w.data(), rrms0.data(), N, C);
  expect_doubled("dinp", dinp, dinp2);
  expect_doubled("dweight", dw, dw2);

  loss();
  FVec finp = to_float(inp), fw = to_float(w), fR = to_float(R);
  FVec fout(out.size()), frrms(N), fdinp(inp.size(), 0.f), fdw(C, 0.f);
  rmsnorm_forward(fout.data(), frrms.data(), finp.data(), fw.data(), N, C, float(eps));
  rmsnorm_backward(fdinp.data(), fdw.data(), fR.data(), finp.data(), fw.data(), frrms.data(), N, C);
  expect_float_close("out", fout, out);
  expect_float_close("rrms", frrms, rrms);
  expect_float_close("dinp", fdinp, dinp);
  expect_float_close("dweight", fdw, dw);
  FVec fagain(fout.size());
  rmsnorm_apply(fagain.data(), finp.data(), fw.data(), frrms.data(), N, C);
  EXPECT_EQ(fagain, fout);
}

// N = 70: several 32-row blocks of the backward's dweight reduction; N*C above
// 16384 runs the threaded path.
INSTANTIATE_TEST_SUITE_P(LlamaOps, RmsNormTest,
                         ::testing::Values(NormShape{1, 13}, NormShape{7, 12}, NormShape{70, 9},
                                           NormShape{130, 131}),
                         [](const auto& info) {
                           return shape_name({{"N", info.param.N}, {"C", info.param.C}});
                         });

// The dweight reduction does not depend on the thread count.
TEST(LlamaOps, RmsNormBackwardIsThreadCountIndependent) {
  const int N = 300, C = 96;
  std::mt19937 g(22);
  const FVec inp = to_float(rand_vec(g, std::size_t(N) * C)), w = to_float(rand_vec(g, C));
  const FVec dout = to_float(rand_vec(g, inp.size()));
  FVec out(inp.size()), rrms(N);
  rmsnorm_forward(out.data(), rrms.data(), inp.data(), w.data(), N, C, 1e-6);
  auto grads = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    FVec dinp(inp.size(), 0.f), dw(C, 0.f);
    rmsnorm_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), rrms.data(), N, C);
    omp_set_num_threads(saved);
    dinp.insert(dinp.end(), dw.begin(), dw.end());
    return dinp;
  };
  const FVec one = grads(1);
  EXPECT_EQ(grads(2), one);
  EXPECT_EQ(grads(3), one);
}

// ---------------------------------------------------------------------------
// RoPE

// The reference angle of pair i at position pos (no scaling), from the definition.
double ref_angle(int pos, int i, int D, double theta) {
  return pos * std::pow(theta, -2.0 * i / D);
}

TEST(LlamaOps, RopeTableHandValues) {
  const int T = 3, D = 8;
  Vec c(T * D / 2), s(T * D / 2);
  rope_table(c.data(), s.data(), 0, T, D, RopeParams{});
  for (int i = 0; i < D / 2; ++i) { // position 0: no rotation
    EXPECT_EQ(c[i], 1.0) << i;
    EXPECT_EQ(s[i], 0.0) << i;
  }
  // Position 1, pair 0: inv_freq = 1, one radian.
  EXPECT_NEAR(c[D / 2 + 0], 0.54030230586813977, 1e-16);
  EXPECT_NEAR(s[D / 2 + 0], 0.84147098480789651, 1e-16);
  // Position 2, pair 1: inv_freq = 10000^(-2/8) = 0.1, angle 0.2.
  EXPECT_NEAR(c[D + 1], 0.98006657784124163, 1e-16);
  EXPECT_NEAR(s[D + 1], 0.19866933079506122, 1e-16);

  // Applied: position 0 is the identity, position 1 turns pair 0 by one radian.
  Vec x(T * D, 0.0), y(T * D, 0.0);
  std::mt19937 g(23);
  const Vec x0 = rand_vec(g, D);
  std::copy(x0.begin(), x0.end(), x.begin());
  x[D + 0] = 1.0; // position 1: x = e_0, then e_{D/2}
  rope_forward(y.data(), x.data(), c.data(), s.data(), 1, T, 1, D, D);
  for (int i = 0; i < D; ++i) EXPECT_EQ(y[i], x0[i]) << i;
  EXPECT_NEAR(y[D + 0], 0.54030230586813977, 1e-16);
  EXPECT_NEAR(y[D + D / 2], 0.84147098480789651, 1e-16);
  x[D + 0] = 0.0;
  x[D + D / 2] = 1.0;
  rope_forward(y.data(), x.data(), c.data(), s.data(), 1, T, 1, D, D);
  EXPECT_NEAR(y[D + 0], -0.84147098480789651, 1e-16);
  EXPECT_NEAR(y[D + D / 2], 0.54030230586813977, 1e-16);
}

// Llama 3 scaling (Llama 3.1 values) against the formula written here the way
// transformers' _compute_llama3_parameters writes it, and against values
// computed separately (Python, double) for five pairs, one per regime edge.
TEST(LlamaOps, RopeLlama3Scaling) {
  RopeParams p;
  p.theta = 500000.0;
  p.llama3 = true;
  p.factor = 8.0;
  p.low_freq_factor = 1.0;
  p.high_freq_factor = 4.0;
  p.original_max_position = 8192.0;
  for (const int D : {64, 128}) {
    Vec got(D / 2);
    rope_inv_freq(got.data(), D, p);
    const double low_wavelen = 8192.0 / 1.0, high_wavelen = 8192.0 / 4.0;
    int kept = 0, divided = 0, smoothed = 0;
    for (int i = 0; i < D / 2; ++i) {
      const double f = 1.0 / std::pow(500000.0, double(2 * i) / D);
      const double wavelen = 2 * std::numbers::pi / f;
      double llama = wavelen > low_wavelen ? f / 8.0 : f;
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) llama = (1 - smooth) * llama / 8.0 + smooth * llama;
      kept += wavelen < high_wavelen;
      divided += wavelen > low_wavelen;
      smoothed += medium;
      EXPECT_NEAR(got[i], llama, 1e-14 * llama) << "D=" << D << " i=" << i;
      if (i > 0) {
        EXPECT_LT(got[i], got[i - 1]) << "D=" << D << " i=" << i;
      }
    }
    EXPECT_GT(kept, 0) << D;
    EXPECT_GT(divided, 0) << D;
    EXPECT_GT(smoothed, 0) << D;
    if (D == 128) {
      EXPECT_EQ(smoothed, 6); // pairs 29..34
      EXPECT_NEAR(got[0], 1.0, 1e-15);
      EXPECT_NEAR(got[28], 0.003211445994752591, 1e-16);
      EXPECT_NEAR(got[29], 0.002166570763503359, 1e-16);
      EXPECT_NEAR(got[32], 0.0005248461609929547, 1e-17);
      EXPECT_NEAR(got[35], 9.556212353964683e-05, 1e-18);
      EXPECT_NEAR(got[63], 3.068925988914511e-07, 1e-20);
    }
    // Tables of three positions from pos0, at large positions: angles formed in double.
    for (const int pos0 : {8190, 100000, 131070}) {
      const int T = 3;
      Vec c(std::size_t(T) * D / 2), s(c.size());
      FVec fc(c.size()), fs(c.size());
      rope_table(c.data(), s.data(), pos0, T, D, p);
      rope_table(fc.data(), fs.data(), pos0, T, D, p);
      for (int t = 0; t < T; ++t)
        for (int i = 0; i < D / 2; ++i) {
          const std::size_t k = std::size_t(t) * D / 2 + i;
          const double angle = (pos0 + t) * got[i];
          EXPECT_NEAR(c[k], std::cos(angle), 1e-15) << pos0 + t << "," << i;
          EXPECT_NEAR(s[k], std::sin(angle), 1e-15) << pos0 + t << "," << i;
          EXPECT_EQ(fc[k], static_cast<float>(c[k])) << pos0 + t << "," << i;
          EXPECT_EQ(fs[k], static_cast<float>(s[k])) << pos0 + t << "," << i;
        }
    }
  }
  // Without scaling inv_freq is theta^(-2i/D).
  p.llama3 = false;
  Vec plain(64);
  rope_inv_freq(plain.data(), 128, p);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(plain[i], ref_angle(1, i, 128, 500000.0), 1e-15);
}

struct HeadShape {
  int B, T, NH, NKV, D;
};
std::string head_shape_name(const ::testing::TestParamInfo<HeadShape>& info) {
  const HeadShape& s = info.param;
  return shape_name({{"B", s.B}, {"T", s.T}, {"NH", s.NH}, {"NKV", s.NKV}, {"D", s.D}});
}
const auto kHeadShapes = ::testing::Values(HeadShape{2, 1, 4, 1, 8}, HeadShape{2, 7, 4, 2, 16},
                                           HeadShape{1, 13, 4, 4, 8}, HeadShape{2, 13, 4, 1, 16},
                                           HeadShape{1, 7, 4, 2, 8}, HeadShape{1, 70, 4, 2, 8});

class RopeTest : public ::testing::TestWithParam<HeadShape> {};

// RoPE on the attention's qkv buffer: q and k heads rotated, v untouched.
TEST_P(RopeTest, ForwardBackward) {
  const HeadShape& sh = GetParam();
  const int B = sh.B, T = sh.T, D = sh.D, H = sh.NH + sh.NKV;
  const int ld = (sh.NH + 2 * sh.NKV) * D;
  RopeParams rp;
  const double theta = rp.theta; // 10000
  std::mt19937 g(24);
  Vec c(std::size_t(T) * D / 2), s(c.size());
  rope_table(c.data(), s.data(), 0, T, D, rp);
  Vec qkv = rand_vec(g, std::size_t(B) * T * ld), R = rand_vec(g, qkv.size());
  Vec out(qkv.size(), 0.0);
  auto loss = [&] {
    rope_forward(out.data(), qkv.data(), c.data(), s.data(), B, T, H, D, ld);
    return dot(out, R);
  };
  loss();
  Vec ref(qkv.size(), 0.0);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        const std::size_t o = (std::size_t(b) * T + t) * ld + std::size_t(h) * D;
        for (int i = 0; i < D / 2; ++i) {
          const double a = ref_angle(t, i, D, theta);
          ref[o + i] = qkv[o + i] * std::cos(a) - qkv[o + i + D / 2] * std::sin(a);
          ref[o + i + D / 2] = qkv[o + i + D / 2] * std::cos(a) + qkv[o + i] * std::sin(a);
        }
      }
  expect_matches_reference("out", out, ref); // the v channels stay 0 in both

  // In place: the rotated heads match the out-of-place result bit for bit, v is untouched.
  Vec inplace = qkv;
  rope_forward(inplace.data(), inplace.data(), c.data(), s.data(), B, T, H, D, ld);
  for (std::size_t k = 0; k < qkv.size(); ++k) {
    const bool is_v = int(k % ld) >= H * D;
    ASSERT_EQ(inplace[k], is_v ? qkv[k] : out[k]) << k;
  }

  Vec dqkv(qkv.size(), 0.0);
  rope_backward(dqkv.data(), R.data(), c.data(), s.data(), B, T, H, D, ld);
  // The loss does not depend on the v channels: their gradient stays 0.
  for (std::size_t k = 0; k < qkv.size(); ++k)
    if (int(k % ld) >= H * D) {
      ASSERT_EQ(dqkv[k], 0.0) << k;
    }
  check_fd("dinp", qkv, dqkv, loss, g);

  Vec dqkv2 = dqkv;
  rope_backward(dqkv2.data(), R.data(), c.data(), s.data(), B, T, H, D, ld);
  expect_doubled("dinp", dqkv, dqkv2);

  // In place (dinp == dout): the gradient is replaced by its rotation; v stays.
  Vec dinplace = R;
  rope_backward(dinplace.data(), dinplace.data(), c.data(), s.data(), B, T, H, D, ld);
  for (std::size_t k = 0; k < qkv.size(); ++k) {
    const bool is_v = int(k % ld) >= H * D;
    ASSERT_EQ(dinplace[k], is_v ? R[k] : dqkv[k]) << k;
  }

  loss();
  FVec fc(c.size()), fs(s.size());
  rope_table(fc.data(), fs.data(), 0, T, D, rp);
  FVec fqkv = to_float(qkv), fR = to_float(R), fout(qkv.size(), 0.f), fd(qkv.size(), 0.f);
  rope_forward(fout.data(), fqkv.data(), fc.data(), fs.data(), B, T, H, D, ld);
  rope_backward(fd.data(), fR.data(), fc.data(), fs.data(), B, T, H, D, ld);
  expect_float_close("out", fout, out);
  expect_float_close("dinp", fd, dqkv);
}

INSTANTIATE_TEST_SUITE_P(LlamaOps, RopeTest, kHeadShapes, head_shape_name);

// ---------------------------------------------------------------------------
// SwiGLU
struct MlpShape {
  int N, I;
};
class SwigluTest : public ::testing::TestWithParam<MlpShape> {};

TEST_P(SwigluTest, ForwardBackward) {
  const int N = GetParam().N, I = GetParam().I;
  std::mt19937 g(25);
  Vec gu = rand_vec(g, std::size_t(N) * 2 * I, -4.0, 4.0), R = rand_vec(g, std::size_t(N) * I);
  Vec out(R.size());
  auto loss = [&] {
    swiglu_forward(out.data(), gu.data(), N, I);
    return dot(out, R);
  };
  loss();
  Vec ref(out.size());
  for (int n = 0; n < N; ++n)
    for (int j = 0; j < I; ++j) {
      const double gate = gu[std::size_t(n) * 2 * I + j], up = gu[std::size_t(n) * 2 * I + I + j];
      ref[std::size_t(n) * I + j] = gate / (1.0 + std::exp(-gate)) * up;
    }
  expect_matches_reference("out", out, ref);

  Vec dgu(gu.size(), 0.0);
  swiglu_backward(dgu.data(), R.data(), gu.data(), N, I);
  check_fd("dgate_up", gu, dgu, loss, g);
  Vec dgu2 = dgu;
  swiglu_backward(dgu2.data(), R.data(), gu.data(), N, I);
  expect_doubled("dgate_up", dgu, dgu2);

  loss();
  FVec fgu = to_float(gu), fR = to_float(R), fout(out.size()), fdgu(gu.size(), 0.f);
  swiglu_forward(fout.data(), fgu.data(), N, I);
  swiglu_backward(fdgu.data(), fR.data(), fgu.data(), N, I);
  expect_float_close("out", fout, out);
  expect_float_close("dgate_up", fdgu, dgu);
}

// 300 x 131 runs the threaded path.
INSTANTIATE_TEST_SUITE_P(LlamaOps, SwigluTest,
                         ::testing::Values(MlpShape{1, 1}, MlpShape{7, 13}, MlpShape{13, 37},
                                           MlpShape{300, 131}),
                         [](const auto& info) {
                           return shape_name({{"N", info.param.N}, {"I", info.param.I}});
                         });

// Far from 0 silu tends to 0 (g -> -inf) and to g (g -> +inf); nothing overflows.
TEST(LlamaOps, SwigluIsFiniteAtExtremeInputs) {
  const FVec gate = {-1e4f, -300.0f, -90.0f, 90.0f, 300.0f, 1e4f};
  const int I = int(gate.size());
  FVec gu(gate);
  gu.insert(gu.end(), I, 2.0f); // up = 2
  FVec out(I), dgu(2 * I, 0.0f), dout(I, 1.0f);
  swiglu_forward(out.data(), gu.data(), 1, I);
  swiglu_backward(dgu.data(), dout.data(), gu.data(), 1, I);
  for (int j = 0; j < I; ++j) {
    ASSERT_TRUE(std::isfinite(out[j]) && std::isfinite(dgu[j]) && std::isfinite(dgu[I + j]))
        << gate[j];
    if (gate[j] < 0) {
      EXPECT_NEAR(out[j], 0.0f, 1e-30f) << gate[j];
      EXPECT_NEAR(dgu[j], 0.0f, 1e-30f) << gate[j];
      EXPECT_NEAR(dgu[I + j], 0.0f, 1e-30f) << gate[j];
    } else {
      EXPECT_NEAR(out[j], 2.0f * gate[j], 1e-6f * gate[j]) << gate[j];
      EXPECT_NEAR(dgu[j], 2.0f, 1e-6f) << gate[j];
      EXPECT_NEAR(dgu[I + j], gate[j], 1e-6f * gate[j]) << gate[j];
    }
  }
}

// ---------------------------------------------------------------------------
// Grouped-query attention
class GqaTest : public ::testing::TestWithParam<HeadShape> {};

TEST_P(GqaTest, ForwardBackward) {
  const HeadShape& sh = GetParam();
  const int B = sh.B, T = sh.T, NH = sh.NH, NKV = sh.NKV, D = sh.D;
  const int ld = (NH + 2 * NKV) * D, OC = NH * D, group = NH / NKV;
  std::mt19937 g(26);
  const std::size_t natt = std::size_t(B) * NH * T * T;
  Vec qkv = rand_vec(g, std::size_t(B) * T * ld), R = rand_vec(g, std::size_t(B) * T * OC);
  Vec out(R.size()), att(natt), scratch(natt);
  auto loss = [&] {
    gqa_attention_forward(out.data(), att.data(), qkv.data(), B, T, NH, NKV, D);
    return dot(out, R);
  };
  loss();

  // Reference forward, from the definition.
  Vec ref_out(out.size()), ref_att(natt, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const int kvh = h / group;
      for (int t = 0; t < T; ++t) {
        const double* q = &qkv[(std::size_t(b) * T + t) * ld + std::size_t(h) * D];
        Vec sc(t + 1);
        double mx = -1e300;
        for (int j = 0; j <= t; ++j) {
          const double* k = &qkv[(std::size_t(b) * T + j) * ld + std::size_t(NH + kvh) * D];
          double d = 0;
          for (int i = 0; i < D; ++i) d += q[i] * k[i];
          sc[j] = d / std::sqrt(double(D));
          mx = std::max(mx, sc[j]);
        }
        double z = 0;
        for (int j = 0; j <= t; ++j) z += std::exp(sc[j] - mx);
        double* arow = &ref_att[((std::size_t(b) * NH + h) * T + t) * T];
        for (int j = 0; j <= t; ++j) arow[j] = std::exp(sc[j] - mx) / z;
        for (int i = 0; i < D; ++i) {
          double o = 0;
          for (int j = 0; j <= t; ++j)
            o += arow[j] * qkv[(std::size_t(b) * T + j) * ld + std::size_t(NH + NKV + kvh) * D + i];
          ref_out[(std::size_t(b) * T + t) * OC + std::size_t(h) * D + i] = o;
        }
      }
    }
  expect_matches_reference("att", att, ref_att);
  expect_matches_reference("out", out, ref_out);
  const Vec att0 = att;

  Vec dqkv(qkv.size(), 0.0);
  gqa_attention_backward(dqkv.data(), scratch.data(), R.data(), qkv.data(), att0.data(), B, T, NH,
                         NKV, D);
  check_fd("dqkv", qkv, dqkv, loss, g);

  Vec dqkv2 = dqkv;
  gqa_attention_backward(dqkv2.data(), scratch.data(), R.data(), qkv.data(), att0.data(), B, T, NH,
                         NKV, D);
  expect_doubled("dqkv", dqkv, dqkv2);

  // Grouped-query attention is multi-head attention with each kv head repeated
  // for the query heads of its group: same outputs, and dk/dv are the sums of
  // the repeated heads' gradients.
  loss(); // out and att from the unperturbed inputs again
  const int ld_mha = 3 * OC;
  Vec mha(std::size_t(B) * T * ld_mha);
  for (std::size_t bt = 0; bt < std::size_t(B) * T; ++bt)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < D; ++i) {
        const int kvh = h / group;
        mha[bt * ld_mha + h * D + i] = qkv[bt * ld + h * D + i];
        mha[bt * ld_mha + OC + h * D + i] = qkv[bt * ld + (NH + kvh) * D + i];
        mha[bt * ld_mha + 2 * OC + h * D + i] = qkv[bt * ld + (NH + NKV + kvh) * D + i];
      }
  Vec mout(out.size()), matt(natt), mscratch(natt), dmha(mha.size(), 0.0);
  attention_forward(mout.data(), matt.data(), mha.data(), B, T, OC, NH);
  attention_backward(dmha.data(), mscratch.data(), R.data(), mha.data(), matt.data(), B, T, OC, NH);
  expect_matches_reference("out vs multi-head", out, mout);
  Vec summed(qkv.size(), 0.0);
  for (std::size_t bt = 0; bt < std::size_t(B) * T; ++bt)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < D; ++i) {
        const int kvh = h / group;
        summed[bt * ld + h * D + i] = dmha[bt * ld_mha + h * D + i];
        summed[bt * ld + (NH + kvh) * D + i] += dmha[bt * ld_mha + OC + h * D + i];
        summed[bt * ld + (NH + NKV + kvh) * D + i] += dmha[bt * ld_mha + 2 * OC + h * D + i];
      }
  expect_matches_reference("dqkv vs multi-head", dqkv, summed);

  loss();
  FVec fqkv = to_float(qkv), fR = to_float(R), fout(out.size()), fatt(natt), fscratch(natt);
  FVec fdqkv(qkv.size(), 0.f);
  gqa_attention_forward(fout.data(), fatt.data(), fqkv.data(), B, T, NH, NKV, D);
  gqa_attention_backward(fdqkv.data(), fscratch.data(), fR.data(), fqkv.data(), fatt.data(), B, T,
                         NH, NKV, D);
  expect_float_close("out", fout, out);
  expect_float_close("att", fatt, att);
  expect_float_close("dqkv", fdqkv, dqkv);
}

INSTANTIATE_TEST_SUITE_P(LlamaOps, GqaTest, kHeadShapes, head_shape_name);

// dk/dv add the group's query heads in a fixed order: the same bits for any
// thread count (T = 130: three row blocks, threaded path).
TEST(LlamaOps, GqaIsThreadCountIndependent) {
  const int B = 2, T = 130, NH = 4, NKV = 1, D = 16;
  std::mt19937 g(28);
  const FVec qkv = to_float(rand_vec(g, std::size_t(B) * T * (NH + 2 * NKV) * D));
  const FVec dout = to_float(rand_vec(g, std::size_t(B) * T * NH * D));
  const std::size_t natt = std::size_t(B) * NH * T * T;
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    FVec out(dout.size()), att(natt), scratch(natt), dqkv(qkv.size(), 0.f);
    gqa_attention_forward(out.data(), att.data(), qkv.data(), B, T, NH, NKV, D);
    gqa_attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), B, T,
                           NH, NKV, D);
    omp_set_num_threads(saved);
    out.insert(out.end(), dqkv.begin(), dqkv.end());
    return out;
  };
  const FVec one = run(1);
  EXPECT_EQ(run(2), one);
  EXPECT_EQ(run(3), one);
}

// GPT-2's attention is the NKV == NH case of the one implementation: same bits.
TEST(LlamaOps, MultiHeadAttentionIsGqaWithAllHeads) {
  const int B = 2, T = 70, NH = 4, D = 16, C = NH * D;
  std::mt19937 g(27);
  const FVec qkv = to_float(rand_vec(g, std::size_t(B) * T * 3 * C));
  const FVec dout = to_float(rand_vec(g, std::size_t(B) * T * C));
  const std::size_t natt = std::size_t(B) * NH * T * T;
  FVec o1(dout.size()), o2(dout.size()), a1(natt), a2(natt), s(natt);
  FVec d1(qkv.size(), 0.f), d2(qkv.size(), 0.f);
  attention_forward(o1.data(), a1.data(), qkv.data(), B, T, C, NH);
  gqa_attention_forward(o2.data(), a2.data(), qkv.data(), B, T, NH, NH, D);
  attention_backward(d1.data(), s.data(), dout.data(), qkv.data(), a1.data(), B, T, C, NH);
  gqa_attention_backward(d2.data(), s.data(), dout.data(), qkv.data(), a2.data(), B, T, NH, NH, D);
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(a1, a2);
  EXPECT_EQ(d1, d2);
}

} // namespace
