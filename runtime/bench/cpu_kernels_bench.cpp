#include "runtime/bench/cpu_kernels_bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <regex>
#include <vector>

#include "kernels/ops.h"
#include "runtime/model/config.h"
#include "runtime/util/error.h"
#include "runtime/util/rng.h"

namespace myelin {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<float> random_vec(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  Rng64 r(seed);
  for (auto& x : v) x = (r.uniform() * 2 - 1) * scale;
  return v;
}

// Evicts caches between runs: writes a buffer larger than any LLC here.
void flush_caches() {
  static std::vector<char> junk(std::size_t(128) << 20);
  static char v = 0;
  ++v;
  std::memset(junk.data(), v, junk.size());
}

double median_time(const std::function<void()>& f, int reps) {
  f(); // warm-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    flush_caches();
    const double t0 = now_s();
    f();
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Kernel {
  std::string name;
  double bytes, flops;
  std::function<void()> run;
};

} // namespace

int run_cpu_kernel_bench(const CpuBenchOptions& o) {
  // The kernels' shapes go through the model's size check (as one layer).
  const FieldNamer flag = [](std::string_view key) -> std::string {
    if (key == "batch_size") return "--batch";
    if (key == "seq_len" || key == "max_seq_len") return "--seq";
    if (key == "padded_vocab") return "--vocab";
    if (key == "intermediate_size") return "--intermediate";
    if (key == "kv_heads") return "--kv-heads";
    return "--" + std::string(key);
  };
  const ModelConfig shape{o.seq, o.vocab, o.vocab, 1, o.heads, o.channels};
  shape.validate(flag);
  validate_micro_batch(shape, o.batch, o.seq, flag);
  // The Llama-block ops: grouped-query attention with NKV kv heads, SwiGLU of
  // width I, through the same check as a Llama model's.
  require(o.kv_heads >= 0 && o.intermediate >= 0, o.kv_heads < 0 ? "--kv-heads" : "--intermediate",
          "expected a positive number (0: the default)");
  ModelConfig llama = shape;
  llama.family = Family::kLlama;
  llama.num_kv_heads = o.kv_heads > 0 ? o.kv_heads : (o.heads % 2 == 0 ? o.heads / 2 : o.heads);
  llama.intermediate_size = o.intermediate > 0 ? o.intermediate : 2 * o.channels;
  llama.validate(flag);
  validate_micro_batch(llama, o.batch, o.seq, flag);
  require(o.repetitions > 0 && o.repetitions <= 1'000'000, "--reps", "expected 1..1000000");
  std::regex filter;
  try {
    filter = std::regex(o.filter);
  } catch (const std::regex_error&) {
    throw InputError("--filter: not a valid regular expression: " + o.filter);
  }
  const int B = o.batch, T = o.seq, C = o.channels, NH = o.heads, V = o.vocab;
  const int Vp = (V + 63) / 64 * 64;
  const std::size_t N = std::size_t(B) * T;

  // ---- machine limits ------------------------------------------------------
  const std::size_t big = std::size_t(64) << 20; // floats: 256 MiB per buffer
  std::vector<float> src(big, 1.0f), dst(big, 0.0f);
  const double copy_t = median_time(
      [&] {
#pragma omp parallel for schedule(static)
        for (long i = 0; i < long(big); i += 4096)
          std::memcpy(dst.data() + i, src.data() + i,
                      sizeof(float) * std::min<std::size_t>(4096, big - i));
      },
      5);
  const double peak_gbs = 2.0 * big * sizeof(float) / copy_t / 1e9;
  const int G = 2048;
  auto ga = random_vec(std::size_t(G) * G, 1), gb = random_vec(std::size_t(G) * G, 2),
       gc = random_vec(std::size_t(G) * G, 3);
  const double gemm_t = median_time(
      [&] { cpu::matmul_forward(gc.data(), ga.data(), gb.data(), (const float*)nullptr, G, G, G); },
      3);
  const double peak_gflops = 2.0 * G * G * G / gemm_t / 1e9;
  src.clear();
  src.shrink_to_fit();
  dst.clear();
  dst.shrink_to_fit();

  // ---- buffers -------------------------------------------------------------
  auto x = random_vec(N * C, 4), y = random_vec(N * C, 5), dout = random_vec(N * C, 6);
  auto dx = random_vec(N * C, 7), w = random_vec(std::size_t(4) * C * C, 8, 0.05f);
  auto bias = random_vec(4 * C, 9), dw = random_vec(std::size_t(4) * C * C, 10);
  auto db = random_vec(4 * C, 11), h = random_vec(N * 4 * C, 12), dh = random_vec(N * 4 * C, 13);
  auto qkv = random_vec(N * 3 * C, 14), dqkv = random_vec(N * 3 * C, 15);
  auto att = random_vec(std::size_t(B) * NH * T * T, 16), scratch = att;
  auto mean = random_vec(N, 17), rstd = random_vec(N, 18, 1.0f);
  for (auto& r : rstd) r = 1.0f + std::fabs(r);
  auto lnw = random_vec(C, 19), lnb = random_vec(C, 20), dlnw = lnw, dlnb = lnb;
  auto wte = random_vec(std::size_t(Vp) * C, 21, 0.02f), wpe = random_vec(std::size_t(T) * C, 22);
  auto dwte = wte, dwpe = wpe;
  auto logits = random_vec(N * Vp, 23), losses = random_vec(N, 24);
  std::vector<int> tokens(N), targets(N);
  Rng64 rr(25);
  for (std::size_t i = 0; i < N; ++i) {
    tokens[i] = int(rr.below(V));
    targets[i] = int(rr.below(V));
  }
  auto params = random_vec(N * C, 26), m = random_vec(N * C, 27), v = random_vec(N * C, 28);
  for (auto& e : v) e = std::fabs(e);
  // Llama-block ops at the same width: grouped-query attention with NKV kv
  // heads (--kv-heads; qkv holds (NH + 2 NKV) D <= 3C columns), RoPE on its q
  // and k heads, SwiGLU of width I (--intermediate) on a (gate | up) buffer
  // [N, 2I], RMSNorm on x.
  const int NKV = llama.kv_heads(), D = C / NH, I = llama.hidden();
  std::vector<float> rope_cos(std::size_t(T) * D / 2), rope_sin(rope_cos.size());
  auto swiglu_out = random_vec(N * I, 29), swiglu_dout = random_vec(N * I, 30);
  auto gate_up = random_vec(N * 2 * I, 31), dgate_up = random_vec(N * 2 * I, 32);
  cpu::rope_table(rope_cos.data(), rope_sin.data(), 0, T, D, cpu::RopeParams{});
  const double f = sizeof(float);
  const double NC = double(N) * C, hs = double(C) / NH;
  const double att_pairs = double(B) * NH * T * (T + 1) / 2.0; // causal (query, key) pairs
  const double gqa_in = double(N) * (NH + 2 * NKV) * D;        // qkv elements
  const double rope_el = double(N) * (NH + NKV) * D, rope_tab = double(T) * D;
  const double NI = double(N) * I;

  std::vector<Kernel> ks = {
      {"encoder_fwd", f * 3 * NC, NC,
       [&] { cpu::encoder_forward(x.data(), tokens.data(), wte.data(), wpe.data(), B, T, C); }},
      {"encoder_bwd", f * 3 * NC, 2 * NC,
       [&] {
         cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C, Vp);
       }},
      {"layernorm_fwd", f * (2 * NC + 2 * N), 8 * NC,
       [&] {
         cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), lnw.data(),
                                lnb.data(), int(N), C);
       }},
      {"layernorm_bwd", f * (4 * NC + 2 * N), 14 * NC,
       [&] {
         cpu::layernorm_backward(dx.data(), dlnw.data(), dlnb.data(), dout.data(), x.data(),
                                 lnw.data(), mean.data(), rstd.data(), int(N), C);
       }},
      {"matmul_qkv_fwd", f * (NC + 3.0 * C * C + 3 * NC), 2 * NC * 3 * C,
       [&] { cpu::matmul_forward(qkv.data(), x.data(), w.data(), bias.data(), int(N), C, 3 * C); }},
      {"matmul_qkv_bwd", f * (2 * NC + 6.0 * C * C + 3 * NC), 4 * NC * 3 * C,
       [&] {
         cpu::matmul_backward(dx.data(), dw.data(), db.data(), qkv.data(), x.data(), w.data(),
                              int(N), C, 3 * C);
       }},
      {"matmul_fc_fwd", f * (NC + 4.0 * C * C + 4 * NC), 2 * NC * 4 * C,
       [&] { cpu::matmul_forward(h.data(), x.data(), w.data(), bias.data(), int(N), C, 4 * C); }},
      {"matmul_fc_bwd", f * (2 * NC + 8.0 * C * C + 4 * NC), 4 * NC * 4 * C,
       [&] {
         cpu::matmul_backward(dx.data(), dw.data(), db.data(), h.data(), x.data(), w.data(), int(N),
                              C, 4 * C);
       }},
      {"attention_fwd", f * (3 * NC + NC + att_pairs), 4 * att_pairs * hs,
       [&] { cpu::attention_forward(y.data(), att.data(), qkv.data(), B, T, C, NH); }},
      {"attention_bwd", f * (3 * NC * 2 + NC + 2 * att_pairs), 8 * att_pairs * hs,
       [&] {
         cpu::attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(),
                                 B, T, C, NH);
       }},
      {"gqa_attention_fwd", f * (gqa_in + NC + att_pairs), 4 * att_pairs * hs,
       [&] { cpu::gqa_attention_forward(y.data(), att.data(), qkv.data(), B, T, NH, NKV, D); }},
      {"gqa_attention_bwd", f * (gqa_in * 2 + NC + 2 * att_pairs), 8 * att_pairs * hs,
       [&] {
         cpu::gqa_attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(),
                                     att.data(), B, T, NH, NKV, D);
       }},
      {"rmsnorm_fwd", f * (2 * NC + N + C), 5 * NC,
       [&] {
         cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), lnw.data(), int(N), C, 1e-5f);
       }},
      {"rmsnorm_bwd", f * (4 * NC + N + C), 11 * NC,
       [&] {
         cpu::rmsnorm_backward(dx.data(), dlnw.data(), dout.data(), x.data(), lnw.data(),
                               rstd.data(), int(N), C);
       }},
      {"rope_fwd", f * (2 * rope_el + rope_tab), 3 * rope_el,
       [&] {
         cpu::rope_forward(qkv.data(), qkv.data(), rope_cos.data(), rope_sin.data(), B, T, NH + NKV,
                           D, (NH + 2 * NKV) * D);
       }},
      {"rope_bwd", f * (3 * rope_el + rope_tab), 4 * rope_el,
       [&] {
         cpu::rope_backward(dqkv.data(), qkv.data(), rope_cos.data(), rope_sin.data(), B, T,
                            NH + NKV, D, (NH + 2 * NKV) * D);
       }},
      // exp counted as 10 FLOPs (its polynomial), a division as 1.
      {"swiglu_fwd", f * 3 * NI, 17 * NI,
       [&] { cpu::swiglu_forward(swiglu_out.data(), gate_up.data(), int(N), I); }},
      {"swiglu_bwd", f * 7 * NI, 23 * NI,
       [&] {
         cpu::swiglu_backward(dgate_up.data(), swiglu_dout.data(), gate_up.data(), int(N), I);
       }},
      {"gelu_fwd", f * 8 * NC, 4 * NC * 10,
       [&] { cpu::gelu_forward(dh.data(), h.data(), std::size_t(N) * 4 * C); }},
      {"gelu_bwd", f * 12 * NC, 4 * NC * 18,
       [&] { cpu::gelu_backward(dh.data(), h.data(), h.data(), std::size_t(N) * 4 * C); }},
      {"residual_fwd", f * 3 * NC, NC,
       [&] { cpu::residual_forward(y.data(), x.data(), dout.data(), std::size_t(NC)); }},
      {"residual_bwd", f * 5 * NC, 2 * NC,
       [&] { cpu::residual_backward(dx.data(), y.data(), dout.data(), std::size_t(NC)); }},
      {"classifier", f * (2.0 * N * Vp), 5.0 * N * V,
       [&] {
         cpu::classifier_forward_backward(losses.data(), logits.data(), logits.data(),
                                          targets.data(), int(N), V, Vp, 1.0f / float(N));
       }},
      {"adamw", f * 7 * NC, 12 * NC,
       [&] {
         cpu::adamw_update(params.data(), dx.data(), m.data(), v.data(), std::size_t(NC),
                           cpu::AdamWParams{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1});
       }},
      {"grad_norm", f * NC, 2 * NC, [&] { (void)cpu::sum_squares(dx.data(), std::size_t(NC)); }},
  };

  std::printf("cpu: %d threads | copy %.1f GB/s | sgemm %.1f GFLOP/s | shape B=%d T=%d C=%d NH=%d "
              "V=%d | llama NKV=%d I=%d\n",
              omp_get_max_threads(), peak_gbs, peak_gflops, B, T, C, NH, V, NKV, I);
  std::printf("%-16s %10s %10s %10s %8s %8s\n", "kernel", "median_us", "GB/s", "GFLOP/s", "%limit",
              "bound");
  // JSON in the same layout as the CUDA benchmark's, so one plot script reads both.
  char head[256];
  std::snprintf(head, sizeof(head),
                "{\"device\":\"cpu\",\"threads\":%d,\"peak_bytes_per_s\":%.6g,"
                "\"peak_flop_per_s\":%.6g,\"results\":[",
                omp_get_max_threads(), peak_gbs * 1e9, peak_gflops * 1e9);
  std::string json = head, csv = "kernel,median_us,gbps,gflops,share,bound\n";
  bool first = true;
  for (const auto& k : ks) {
    if (!std::regex_search(k.name, filter)) continue;
    const double t = median_time(k.run, o.repetitions);
    const double gbs = k.bytes / t / 1e9, gfl = k.flops / t / 1e9;
    // The bound is whichever limit the kernel's arithmetic intensity meets first.
    const bool compute = k.flops / k.bytes > peak_gflops / peak_gbs;
    const double share = compute ? gfl / peak_gflops : gbs / peak_gbs;
    std::printf("%-16s %10.1f %10.2f %10.2f %7.1f%% %8s\n", k.name.c_str(), t * 1e6, gbs, gfl,
                share * 100, compute ? "compute" : "memory");
    char row[384];
    std::snprintf(row, sizeof(row),
                  "%s\n{\"kernel\":\"%s\",\"median_ms\":%.6f,\"bytes\":%.6g,\"flops\":%.6g,"
                  "\"gb_s\":%.4f,\"tflop_s\":%.6f,\"share\":%.4f,\"bound\":\"%s\"}",
                  first ? "" : ",", k.name.c_str(), t * 1e3, k.bytes, k.flops, gbs, gfl / 1e3,
                  share, compute ? "compute" : "memory");
    first = false;
    json += row;
    std::snprintf(row, sizeof(row), "%s,%.3f,%.4f,%.4f,%.4f,%s\n", k.name.c_str(), t * 1e6, gbs,
                  gfl, share, compute ? "compute" : "memory");
    csv += row;
  }
  json += "]}\n";
  if (!o.output.empty()) {
    std::ofstream out(o.output);
    require(bool(out), "--output", "cannot write " + o.output);
    const bool is_csv = o.output.size() >= 4 && o.output.substr(o.output.size() - 4) == ".csv";
    out << (is_csv ? csv : json);
  }
  return 0;
}

} // namespace myelin
