// Tests of the CPU backend kernels (kernels/ops.h, kernels/cpu/*.cpp) of the
// GPT-2 block; the Llama ops are in test_llama_ops.cpp.
//
// Every backward pass is checked in double precision against central finite
// differences, the float instantiation against the double one, and a second
// backward call must double every gradient: the method and its tolerances are
// in tests/common/fd_check.h.
// Inputs are uniform(-1, 1) from a fixed-seed std::mt19937 unless noted.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/common/fd_check.h"

namespace {

using namespace myelin::cpu;
using namespace myelin::fd_check;

// ---------------------------------------------------------------------------
TEST(CpuOps, Encoder) {
  std::mt19937 g(1);
  const int B = 2, T = 5, C = 12, V = 11, Vp = 16;
  std::vector<int> tok(B * T);
  std::uniform_int_distribution<int> ut(0, V - 1);
  for (int& t : tok) t = ut(g);
  tok[3] = tok[0]; // repeated tokens accumulate into one row
  tok[7] = tok[0];
  Vec wte = rand_vec(g, std::size_t(Vp) * C), wpe = rand_vec(g, std::size_t(T) * C);
  Vec R = rand_vec(g, std::size_t(B) * T * C);
  Vec out(R.size());
  auto loss = [&] {
    encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, R);
  };
  loss();
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < C; ++i)
        EXPECT_EQ(out[(b * T + t) * C + i], wte[tok[b * T + t] * C + i] + wpe[t * C + i]);

  Vec dwte(wte.size(), 0.0), dwpe(wpe.size(), 0.0);
  encoder_backward(dwte.data(), dwpe.data(), R.data(), tok.data(), B, T, C, Vp);
  check_fd("dwte", wte, dwte, loss, g);
  check_fd("dwpe", wpe, dwpe, loss, g);

  Vec dwte2 = dwte, dwpe2 = dwpe;
  encoder_backward(dwte2.data(), dwpe2.data(), R.data(), tok.data(), B, T, C, Vp);
  expect_doubled("dwte", dwte, dwte2);
  expect_doubled("dwpe", dwpe, dwpe2);

  FVec fwte = to_float(wte), fwpe = to_float(wpe), fR = to_float(R), fout(out.size());
  FVec fdwte(wte.size(), 0.f), fdwpe(wpe.size(), 0.f);
  loss();
  encoder_forward(fout.data(), tok.data(), fwte.data(), fwpe.data(), B, T, C);
  encoder_backward(fdwte.data(), fdwpe.data(), fR.data(), tok.data(), B, T, C, Vp);
  expect_float_close("out", fout, out);
  expect_float_close("dwte", fdwte, dwte);
  expect_float_close("dwpe", fdwpe, dwpe);
}

// ---------------------------------------------------------------------------
class LayerNormTest : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(LayerNormTest, ForwardBackward) {
  // Plain copies, not structured bindings: clang 14 (the sanitizer build) cannot
  // capture a structured binding in a lambda.
  const int N = GetParam().first, C = GetParam().second; // N = 70: several row blocks
  std::mt19937 g(2);
  Vec inp = rand_vec(g, std::size_t(N) * C), w = rand_vec(g, C), bias = rand_vec(g, C);
  Vec R = rand_vec(g, inp.size());
  Vec out(inp.size()), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), bias.data(), N,
                      C);
    return dot(out, R);
  };
  loss();
  for (int n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int i = 0; i < C; ++i) m += inp[n * C + i] / C;
    for (int i = 0; i < C; ++i) v += (inp[n * C + i] - m) * (inp[n * C + i] - m) / C;
    const double r = 1.0 / std::sqrt(v + 1e-5);
    EXPECT_NEAR(mean[n], m, 1e-14);
    EXPECT_NEAR(rstd[n], r, 1e-12 * r);
    for (int i = 0; i < C; ++i)
      EXPECT_NEAR(out[n * C + i], (inp[n * C + i] - m) * r * w[i] + bias[i], 1e-12);
  }
  const Vec mean0 = mean, rstd0 = rstd;

  Vec dinp(inp.size(), 0.0), dw(C, 0.0), db(C, 0.0);
  layernorm_backward(dinp.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(),
                     mean0.data(), rstd0.data(), N, C);
  check_fd("dinp", inp, dinp, loss, g);
  check_fd("dweight", w, dw, loss, g);
  check_fd("dbias", bias, db, loss, g);

  Vec dinp2 = dinp, dw2 = dw, db2 = db;
  layernorm_backward(dinp2.data(), dw2.data(), db2.data(), R.data(), inp.data(), w.data(),
                     mean0.data(), rstd0.data(), N, C);
  expect_doubled("dinp", dinp, dinp2);
  expect_doubled("dweight", dw, dw2);
  expect_doubled("dbias", db, db2);

  loss();
  FVec finp = to_float(inp), fw = to_float(w), fb = to_float(bias), fR = to_float(R);
  FVec fout(out.size()), fmean(N), frstd(N), fdinp(inp.size(), 0.f), fdw(C, 0.f), fdb(C, 0.f);
  layernorm_forward(fout.data(), fmean.data(), frstd.data(), finp.data(), fw.data(), fb.data(), N,
                    C);
  layernorm_backward(fdinp.data(), fdw.data(), fdb.data(), fR.data(), finp.data(), fw.data(),
                     fmean.data(), frstd.data(), N, C);
  expect_float_close("out", fout, out);
  expect_float_close("mean", fmean, mean);
  expect_float_close("rstd", frstd, rstd);
  expect_float_close("dinp", fdinp, dinp);
  expect_float_close("dweight", fdw, dw);
  expect_float_close("dbias", fdb, db);
}

INSTANTIATE_TEST_SUITE_P(CpuOps, LayerNormTest,
                         ::testing::Values(std::pair{7, 12}, std::pair{70, 9}));

// ---------------------------------------------------------------------------
struct MatmulShape {
  int N, IC, OC;
  bool bias;
};
class MatmulTest : public ::testing::TestWithParam<MatmulShape> {};

TEST_P(MatmulTest, ForwardBackward) {
  // Plain copies, as in LayerNormTest (clang 14 lambdas).
  const MatmulShape& shape = GetParam();
  const int N = shape.N, IC = shape.IC, OC = shape.OC;
  const bool has_bias = shape.bias;
  std::mt19937 g(3);
  Vec inp = rand_vec(g, std::size_t(N) * IC), w = rand_vec(g, std::size_t(OC) * IC);
  Vec bias = rand_vec(g, OC), R = rand_vec(g, std::size_t(N) * OC), out(R.size());
  const double* bp = has_bias ? bias.data() : nullptr;
  auto loss = [&] {
    matmul_forward(out.data(), inp.data(), w.data(), bp, N, IC, OC);
    return dot(out, R);
  };
  loss();
  for (int n = 0; n < N; n += std::max(1, N / 7))
    for (int o = 0; o < OC; ++o) {
      double s = has_bias ? bias[o] : 0.0;
      for (int i = 0; i < IC; ++i) s += inp[n * IC + i] * w[o * IC + i];
      EXPECT_NEAR(out[n * OC + o], s, 1e-12);
    }

  Vec dinp(inp.size(), 0.0), dw(w.size(), 0.0), db(OC, 0.0);
  matmul_backward(dinp.data(), dw.data(), has_bias ? db.data() : nullptr, R.data(), inp.data(),
                  w.data(), N, IC, OC);
  check_fd("dinp", inp, dinp, loss, g);
  check_fd("dweight", w, dw, loss, g);
  if (has_bias) check_fd("dbias", bias, db, loss, g);

  Vec dinp2 = dinp, dw2 = dw, db2 = db;
  matmul_backward(dinp2.data(), dw2.data(), has_bias ? db2.data() : nullptr, R.data(), inp.data(),
                  w.data(), N, IC, OC);
  expect_doubled("dinp", dinp, dinp2);
  expect_doubled("dweight", dw, dw2);
  expect_doubled("dbias", db, db2);

  // Null dinp: only dweight (and dbias) are written.
  Vec dw3(w.size(), 0.0), db3(OC, 0.0);
  matmul_backward(nullptr, dw3.data(), db3.data(), R.data(), inp.data(), w.data(), N, IC, OC);
  for (std::size_t i = 0; i < dw.size(); ++i) EXPECT_NEAR(dw3[i], dw[i], 1e-12);
  if (has_bias) {
    for (int o = 0; o < OC; ++o) EXPECT_NEAR(db3[o], db[o], 1e-12);
  }

  loss();
  FVec finp = to_float(inp), fw = to_float(w), fbias = to_float(bias), fR = to_float(R);
  FVec fout(out.size()), fdinp(inp.size(), 0.f), fdw(w.size(), 0.f), fdb(OC, 0.f);
  matmul_forward(fout.data(), finp.data(), fw.data(), has_bias ? fbias.data() : nullptr, N, IC, OC);
  matmul_backward(fdinp.data(), fdw.data(), has_bias ? fdb.data() : nullptr, fR.data(), finp.data(),
                  fw.data(), N, IC, OC);
  expect_float_close("out", fout, out);
  expect_float_close("dinp", fdinp, dinp);
  expect_float_close("dweight", fdw, dw);
  if (has_bias) expect_float_close("dbias", fdb, db);
}

// The larger shapes are split across threads inside the kernel: by rows, by
// output columns (few rows), and dweight by columns (small OC).
INSTANTIATE_TEST_SUITE_P(CpuOps, MatmulTest,
                         ::testing::Values(MatmulShape{7, 5, 9, true}, MatmulShape{7, 5, 9, false},
                                           MatmulShape{70, 40, 50, true},
                                           MatmulShape{20, 40, 200, true},
                                           MatmulShape{200, 48, 20, false}));

// The same bits for any thread count (a pool replays a contributor's steps on
// another machine): each output is cut into tiles by its shape, not by the
// threads. Row tiles, column tiles (few rows), dweight by columns (small OC),
// one tile, and a float shape as the trainer's.
TEST(CpuOps, MatmulSameBitsForAnyThreadCount) {
  std::mt19937 g(21);
  const int threads = omp_get_max_threads();
  for (const MatmulShape s : {MatmulShape{200, 48, 300, true}, MatmulShape{20, 64, 500, true},
                              MatmulShape{300, 96, 40, false}, MatmulShape{40, 256, 60, true},
                              MatmulShape{128, 64, 192, true}}) {
    const FVec inp = to_float(rand_vec(g, std::size_t(s.N) * s.IC));
    const FVec w = to_float(rand_vec(g, std::size_t(s.OC) * s.IC));
    const FVec bias = to_float(rand_vec(g, s.OC));
    const FVec dout = to_float(rand_vec(g, std::size_t(s.N) * s.OC));
    std::vector<FVec> ref;
    for (const int t : {1, 2, 3, 4}) {
      omp_set_num_threads(t);
      FVec out(dout.size()), dinp(inp.size(), 0.5f), dw(w.size(), 0.25f), db(s.OC, 0.125f);
      matmul_forward(out.data(), inp.data(), w.data(), s.bias ? bias.data() : nullptr, s.N, s.IC,
                     s.OC);
      matmul_backward(dinp.data(), dw.data(), s.bias ? db.data() : nullptr, dout.data(), inp.data(),
                      w.data(), s.N, s.IC, s.OC, 0.5f);
      const std::vector<FVec> got = {out, dinp, dw, db};
      if (ref.empty()) {
        ref = got;
        continue;
      }
      const char* names[] = {"out", "dinp", "dweight", "dbias"};
      for (std::size_t k = 0; k < got.size(); ++k)
        EXPECT_EQ(0, std::memcmp(got[k].data(), ref[k].data(), got[k].size() * sizeof(float)))
            << names[k] << " N=" << s.N << " IC=" << s.IC << " OC=" << s.OC << ": " << t
            << " threads differ from 1";
    }
  }
  omp_set_num_threads(threads);
}

// ---------------------------------------------------------------------------
struct AttnShape {
  int B, T, C, NH;
};
class AttentionTest : public ::testing::TestWithParam<AttnShape> {};

TEST_P(AttentionTest, ForwardBackward) {
  // Plain copies, as in LayerNormTest (clang 14 lambdas).
  const AttnShape& shape = GetParam(); // T = 131 spans three 64-row blocks
  const int B = shape.B, T = shape.T, C = shape.C, NH = shape.NH;
  std::mt19937 g(4);
  const std::size_t natt = std::size_t(B) * NH * T * T;
  Vec qkv = rand_vec(g, std::size_t(B) * T * 3 * C), R = rand_vec(g, std::size_t(B) * T * C);
  Vec out(R.size()), att(natt), scratch(natt);
  auto loss = [&] {
    attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    return dot(out, R);
  };
  loss();

  // Reference forward, written directly from the definition.
  const int hs = C / NH;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; t += std::max(1, T / 9)) {
        const double* q = &qkv[(std::size_t(b) * T + t) * 3 * C + h * hs];
        Vec s(t + 1);
        double mx = -1e300;
        for (int j = 0; j <= t; ++j) {
          const double* k = &qkv[(std::size_t(b) * T + j) * 3 * C + C + h * hs];
          double d = 0;
          for (int i = 0; i < hs; ++i) d += q[i] * k[i];
          s[j] = d / std::sqrt(double(hs));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (int j = 0; j <= t; ++j) z += std::exp(s[j] - mx);
        const double* arow = &att[((std::size_t(b) * NH + h) * T + t) * T];
        for (int j = 0; j < T; ++j)
          EXPECT_NEAR(arow[j], j <= t ? std::exp(s[j] - mx) / z : 0.0, 1e-14);
        for (int i = 0; i < hs; ++i) {
          double o = 0;
          for (int j = 0; j <= t; ++j)
            o += std::exp(s[j] - mx) / z *
                 qkv[(std::size_t(b) * T + j) * 3 * C + 2 * C + h * hs + i];
          EXPECT_NEAR(out[(std::size_t(b) * T + t) * C + h * hs + i], o, 1e-13);
        }
      }
  const Vec att0 = att;

  Vec dqkv(qkv.size(), 0.0);
  attention_backward(dqkv.data(), scratch.data(), R.data(), qkv.data(), att0.data(), B, T, C, NH);
  check_fd("dqkv", qkv, dqkv, loss, g);

  Vec dqkv2 = dqkv;
  attention_backward(dqkv2.data(), scratch.data(), R.data(), qkv.data(), att0.data(), B, T, C, NH);
  expect_doubled("dqkv", dqkv, dqkv2);

  loss();
  FVec fqkv = to_float(qkv), fR = to_float(R), fout(out.size()), fatt(natt), fscratch(natt);
  FVec fdqkv(qkv.size(), 0.f);
  attention_forward(fout.data(), fatt.data(), fqkv.data(), B, T, C, NH);
  attention_backward(fdqkv.data(), fscratch.data(), fR.data(), fqkv.data(), fatt.data(), B, T, C,
                     NH);
  expect_float_close("out", fout, out);
  expect_float_close("att", fatt, att);
  expect_float_close("dqkv", fdqkv, dqkv);
}

TEST_P(AttentionTest, Causal) {
  const auto [B, T, C, NH] = GetParam();
  std::mt19937 g(5);
  const std::size_t natt = std::size_t(B) * NH * T * T;
  Vec qkv = rand_vec(g, std::size_t(B) * T * 3 * C), out(std::size_t(B) * T * C), att(natt);
  attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  const int tf = T - 2; // change the keys and values (not the query) of position tf
  Vec qkv2 = qkv;
  for (int b = 0; b < B; ++b)
    for (int i = C; i < 3 * C; ++i) qkv2[(std::size_t(b) * T + tf) * 3 * C + i] += 0.5;
  Vec out2(out.size()), att2(natt);
  attention_forward(out2.data(), att2.data(), qkv2.data(), B, T, C, NH);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < C; ++i) {
        const std::size_t k = (std::size_t(b) * T + t) * C + i;
        if (t < tf) {
          EXPECT_EQ(out2[k], out[k]) << "b=" << b << " t=" << t;
        } else {
          EXPECT_NE(out2[k], out[k]) << "b=" << b << " t=" << t;
        }
      }
}

INSTANTIATE_TEST_SUITE_P(CpuOps, AttentionTest,
                         ::testing::Values(AttnShape{2, 5, 12, 3}, AttnShape{1, 131, 8, 2}));

// ---------------------------------------------------------------------------
TEST(CpuOps, Gelu) {
  std::mt19937 g(6);
  const std::size_t n = 37;
  Vec x = rand_vec(g, n, -4.0, 4.0), R = rand_vec(g, n), out(n);
  auto loss = [&] {
    gelu_forward(out.data(), x.data(), n);
    return dot(out, R);
  };
  loss();
  for (std::size_t i = 0; i < n; ++i) {
    const double u = std::sqrt(2.0 / M_PI) * (x[i] + 0.044715 * x[i] * x[i] * x[i]);
    EXPECT_NEAR(out[i], 0.5 * x[i] * (1 + std::tanh(u)), 1e-15) << i;
  }
  Vec dx(n, 0.0);
  gelu_backward(dx.data(), x.data(), R.data(), n);
  check_fd("dinp", x, dx, loss, g);
  Vec dx2 = dx;
  gelu_backward(dx2.data(), x.data(), R.data(), n);
  expect_doubled("dinp", dx, dx2);

  loss();
  FVec fx = to_float(x), fR = to_float(R), fout(n), fdx(n, 0.f);
  gelu_forward(fout.data(), fx.data(), n);
  gelu_backward(fdx.data(), fx.data(), fR.data(), n);
  expect_float_close("out", fout, out);
  expect_float_close("dinp", fdx, dx);
}

// ---------------------------------------------------------------------------
TEST(CpuOps, Residual) {
  std::mt19937 g(7);
  const std::size_t n = 29;
  Vec a = rand_vec(g, n), b = rand_vec(g, n), R = rand_vec(g, n), out(n);
  auto loss = [&] {
    residual_forward(out.data(), a.data(), b.data(), n);
    return dot(out, R);
  };
  loss();
  for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] + b[i]);
  Vec da(n, 0.0), db(n, 0.0);
  residual_backward(da.data(), db.data(), R.data(), n);
  check_fd("da", a, da, loss, g);
  check_fd("db", b, db, loss, g);
  Vec da2 = da, db2 = db;
  residual_backward(da2.data(), db2.data(), R.data(), n);
  expect_doubled("da", da, da2);
  expect_doubled("db", db, db2);

  loss();
  FVec fa = to_float(a), fb = to_float(b), fR = to_float(R), fout(n), fda(n, 0.f), fdb(n, 0.f);
  residual_forward(fout.data(), fa.data(), fb.data(), n);
  residual_backward(fda.data(), fdb.data(), fR.data(), n);
  expect_float_close("out", fout, out);
  expect_float_close("da", fda, da);
  expect_float_close("db", fdb, db);
}

// ---------------------------------------------------------------------------
TEST(CpuOps, Classifier) {
  std::mt19937 g(8);
  const int N = 7, V = 11, Vp = 16;
  const double dloss = 1.0 / N;
  Vec logits = rand_vec(g, std::size_t(N) * Vp, -2.0, 2.0);
  for (int n = 0; n < N; ++n)
    for (int i = V; i < Vp; ++i) logits[n * Vp + i] = 50.0; // padding must be ignored
  std::vector<int> tgt(N);
  std::uniform_int_distribution<int> ut(0, V - 1);
  for (int& t : tgt) t = ut(g);
  tgt[0] = 0;
  tgt[1] = V - 1;
  Vec losses(N);
  auto loss = [&] {
    classifier_forward_backward(losses.data(), nullptr, logits.data(), tgt.data(), N, V, Vp, dloss);
    return dloss * std::accumulate(losses.begin(), losses.end(), 0.0);
  };
  loss();
  for (int n = 0; n < N; ++n) {
    double z = 0;
    for (int i = 0; i < V; ++i) z += std::exp(logits[n * Vp + i]);
    EXPECT_NEAR(losses[n], -std::log(std::exp(logits[n * Vp + tgt[n]]) / z), 1e-14) << n;
  }

  Vec dlogits(logits.size(), 123.0), losses2(N);
  classifier_forward_backward(losses2.data(), dlogits.data(), logits.data(), tgt.data(), N, V, Vp,
                              dloss);
  EXPECT_EQ(losses2, losses);
  for (int n = 0; n < N; ++n)
    for (int i = V; i < Vp; ++i) EXPECT_EQ(dlogits[n * Vp + i], 0.0) << "padding " << n << "," << i;
  check_fd("dlogits", logits, dlogits, loss, g);

  // In place: dlogits aliases logits.
  Vec inplace = logits, losses3(N);
  classifier_forward_backward(losses3.data(), inplace.data(), inplace.data(), tgt.data(), N, V, Vp,
                              dloss);
  EXPECT_EQ(losses3, losses);
  EXPECT_EQ(inplace, dlogits);

  FVec flogits = to_float(logits), flosses(N), fdlogits(logits.size());
  classifier_forward_backward(flosses.data(), fdlogits.data(), flogits.data(), tgt.data(), N, V, Vp,
                              dloss);
  expect_float_close("losses", flosses, losses);
  expect_float_close("dlogits", fdlogits, dlogits);
}

// ---------------------------------------------------------------------------
TEST(CpuOps, AdamW) {
  std::mt19937 g(9);
  const std::size_t n = 13;
  Vec p = rand_vec(g, n), m(n, 0.0), v(n, 0.0);
  const Vec g1 = rand_vec(g, n), g2 = rand_vec(g, n);
  AdamWParams hp{0.1f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
  // Hand computation from the definition, in double, with the float fields.
  const double lr = hp.lr, b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps, wd = hp.weight_decay;
  Vec ep = p, em(n, 0.0), ev(n, 0.0);
  for (int t = 1; t <= 2; ++t) {
    const Vec& gr = t == 1 ? g1 : g2;
    for (std::size_t i = 0; i < n; ++i) {
      em[i] = b1 * em[i] + (1 - b1) * gr[i];
      ev[i] = b2 * ev[i] + (1 - b2) * gr[i] * gr[i];
      const double mh = em[i] / (1 - std::pow(b1, t)), vh = ev[i] / (1 - std::pow(b2, t));
      ep[i] -= lr * (mh / (std::sqrt(vh) + eps) + wd * ep[i]);
    }
  }
  FVec fp = to_float(p), fm(n, 0.f), fv(n, 0.f);
  adamw_update(p.data(), g1.data(), m.data(), v.data(), n, hp);
  adamw_update(fp.data(), to_float(g1).data(), fm.data(), fv.data(), n, hp);
  hp.t = 2;
  adamw_update(p.data(), g2.data(), m.data(), v.data(), n, hp);
  adamw_update(fp.data(), to_float(g2).data(), fm.data(), fv.data(), n, hp);
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_NEAR(p[i], ep[i], 1e-14) << i;
    EXPECT_NEAR(m[i], em[i], 1e-15) << i;
    EXPECT_NEAR(v[i], ev[i], 1e-15) << i;
  }
  expect_float_close("param", fp, p);
  expect_float_close("m", fm, m);
  expect_float_close("v", fv, v);
}

// ---------------------------------------------------------------------------
TEST(CpuOps, SumSquaresAndScale) {
  std::mt19937 g(10);
  for (std::size_t n : {std::size_t{1}, std::size_t{1000}, std::size_t{200001}}) {
    Vec x = rand_vec(g, n);
    long double naive = 0;
    for (double e : x) naive += static_cast<long double>(e) * e;
    EXPECT_NEAR(sum_squares(x.data(), n), static_cast<double>(naive), 1e-13 * double(naive)) << n;

    FVec fx = to_float(x);
    long double fnaive = 0;
    for (float e : fx) fnaive += static_cast<long double>(e) * e;
    const double s_many = sum_squares(fx.data(), n);
    EXPECT_NEAR(s_many, static_cast<double>(fnaive), 1e-13 * double(fnaive)) << n;

    // Deterministic, and independent of the thread count.
    EXPECT_EQ(sum_squares(fx.data(), n), s_many);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    EXPECT_EQ(sum_squares(fx.data(), n), s_many);
    omp_set_num_threads(threads);

    Vec y = x;
    scale_inplace(y.data(), n, 0.37);
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(y[i], x[i] * 0.37);
    scale_inplace(fx.data(), n, 0.37); // double literal into a float buffer
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(fx[i], static_cast<float>(x[i]) * 0.37f);
  }
}

} // namespace

// Regression: for very negative inputs exp(-2u) nears FLT_MAX; the backward
// once overflowed an intermediate product to inf and returned 0 * inf = NaN
// (seen as a NaN gradient norm mid-training). Far from 0, GeLU's derivative
// tends to 0 (x -> -inf) and 1 (x -> +inf).
TEST(CpuOps, GeluIsFiniteAtExtremeInputs) {
  const std::vector<float> x = {-1e4f, -300.0f, -50.0f, -12.5f, -9.0f, 9.0f, 50.0f, 1e4f};
  std::vector<float> out(x.size()), din(x.size(), 0.0f), dout(x.size(), 1.0f);
  myelin::cpu::gelu_forward(out.data(), x.data(), x.size());
  myelin::cpu::gelu_backward(din.data(), x.data(), dout.data(), x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(std::isfinite(out[i])) << x[i];
    ASSERT_TRUE(std::isfinite(din[i])) << x[i];
    if (x[i] < 0) {
      EXPECT_NEAR(out[i], 0.0f, 1e-6f) << x[i];
      EXPECT_NEAR(din[i], 0.0f, 1e-6f) << x[i];
    } else {
      EXPECT_NEAR(out[i], x[i], 1e-6f * x[i]) << x[i];
      EXPECT_NEAR(din[i], 1.0f, 1e-6f) << x[i];
    }
  }
}
