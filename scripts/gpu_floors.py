#!/usr/bin/env python3
"""Floors and predicted times of one CUDA training step, before any GPU run.

For every kernel call of one training step (one process, one micro-batch,
bf16 activations and parameter copies, fp32 master weights, gradients and
AdamW moments), in the order runtime/model/transformer.h makes them through
runtime/model/cuda_backend.h, this script counts the bytes each call must move
and the FLOPs it executes, from the byte and FLOP formulas in the header
comments of kernels/cuda/*.cu, and computes

    floor = max(bytes / HBM bandwidth, FLOPs / peak)

on an H100 SXM and an H200 SXM, the peak being the dense bf16 tensor-core
rate for cuBLASLt and the tensor-core attention and the fp32 CUDA-core rate
for everything else. It then sums the calls into a step floor and predicts a
step time under stated efficiency assumptions. Nothing here is measured.

Usage: scripts/gpu_floors.py [--model 124M|350M|774M|1.5B|llama-135M|llama-1B]
                             [--batch B] [--seq T] [--recompute 0|1|2]
Without --model it prints GPT-2 124M (B=64, T=1024) and llama-1B (B=8,
T=2048). Output: markdown on stdout.
"""

import argparse
import math
import sys

# ---- machines: NVIDIA data sheets (H100 Tensor Core GPU; H200 Tensor Core GPU),
# SXM form factor. The data sheets give bf16 tensor-core rates "with sparsity"
# (1,979 TFLOP/s); the dense rate is half. fp32 is the non-tensor CUDA-core rate.
MACHINES = [
    # name, HBM bytes/s, dense bf16 tensor FLOP/s, fp32 CUDA-core FLOP/s
    ("H100 SXM", 3.35e12, 989e12, 67e12),
    ("H200 SXM", 4.8e12, 989e12, 67e12),
]

# ---- prediction assumptions (not measurements) -----------------------------------
GEMM_EFF = 0.65  # cuBLASLt bf16 GEMMs at these shapes: ~650 TFLOP/s of 989
MEM_EFF = 0.85  # memory-bound kernels: 85% of the data-sheet bandwidth
LAUNCH_GAP_S = 1.5e-6  # idle time between two dependent kernels on one stream
HOST_S = 1.0e-3  # per step, an estimate: the one sync, loading the next batch, uploads
# Attention rates, FLOP/s of executed FLOPs (see ATTN_NOTE). FlashAttention-2's
# backward executes its useful FLOPs (5 GEMMs), so its published rate is also its
# rate of executed FLOPs; Myelin's attention_fa2.cu executes 7 (14K, see below).
FA2_FWD = 225e12  # FlashAttention-2 forward, causal, head dim 64, T ~ 1k-2k
FA2_BWD = 175e12  # FlashAttention-2 backward, causal
PESSIMISTIC = 0.5  # the pessimistic scenario: half of FlashAttention-2's rates
SCENARIOS = [
    # label, forward rate, backward rate (executed FLOPs)
    ("attention_fa2 at FlashAttention-2's rate", FA2_FWD, FA2_BWD),
    ("attention_fa2 pessimistic (half that rate)", PESSIMISTIC * FA2_FWD,
     PESSIMISTIC * FA2_BWD),
]

ATTN_NOTE = (
    "FlashAttention-2's published rates: the FlashAttention-3 paper (Shah et al., 2024) "
    "charts FlashAttention-2 on an H100 80GB SXM5 in bf16, counting useful FLOPs "
    "(backward = 2.5 x forward); at head dim 64 and sequence length 1k without "
    "the causal mask, about 306 TFLOP/s forward and 238 TFLOP/s backward "
    "(cuDNN: about 373 and 348); at head dim 128 its causal forward runs at "
    "0.74 x the non-causal one at 1k (about 260 against 350). Assumed here for "
    "FlashAttention-2: 225 TFLOP/s forward and 175 TFLOP/s backward, causal, head "
    "dim 64, T = 1-2k. Myelin's attention (attention_fa2.cu: mma.sync m16n8k16, "
    "ldmatrix, cp.async, 128-row tiles, grouped-query attention included) follows "
    "FlashAttention-2's design but has never run on a GPU, so its rate is unknown; "
    "two scenarios bracket it. (1) At FlashAttention-2's rate: attention_fa2.cu's "
    "executed FLOPs at 225 TFLOP/s forward and 175 TFLOP/s backward. Its backward "
    "is a dQ kernel and a dK/dV kernel that both recompute S and dP (14K executed; "
    "FlashAttention-2 executes its 10K useful FLOPs and adds dQ with atomics "
    "instead), so at the same tensor-core throughput its backward takes 1.4 x "
    "FlashAttention-2's time (125 TFLOP/s of useful FLOPs). (2) Pessimistic: half "
    f"those rates ({PESSIMISTIC * FA2_FWD / 1e12:.1f} and "
    f"{PESSIMISTIC * FA2_BWD / 1e12:.1f} TFLOP/s of executed FLOPs), about what a "
    "desk review estimated for the WMMA kernels that attention_fa2.cu replaced, "
    "for a first version with one 8-warp block per SM (launch bounds; 128-242 "
    "registers per thread) and untuned tile sizes. Neither is a measurement."
)

# ---- models: runtime/model/config.cpp (model_preset) ------------------------------
PRESETS = {
    "124M": dict(family="gpt2", L=12, C=768, NH=12, V=50257, Vp=50304, maxT=1024),
    "350M": dict(family="gpt2", L=24, C=1024, NH=16, V=50257, Vp=50304, maxT=1024),
    "774M": dict(family="gpt2", L=36, C=1280, NH=20, V=50257, Vp=50304, maxT=1024),
    "1.5B": dict(family="gpt2", L=48, C=1600, NH=25, V=50257, Vp=50304, maxT=1024),
    "llama-135M": dict(family="llama", L=30, C=576, NH=9, NKV=3, I=1536, V=49152, Vp=49152,
                       maxT=2048, tied=True),
    "llama-1B": dict(family="llama", L=16, C=2048, NH=32, NKV=8, I=8192, V=128256, Vp=128256,
                     maxT=131072, tied=True),
}
DEFAULT_SHAPES = {"gpt2": (64, 1024), "llama": (8, 2048)}
BF16 = 2  # bytes of a stored activation / parameter copy
F32 = 4


class Model:
    def __init__(self, name, B, T):
        p = PRESETS[name]
        self.name, self.B, self.T = name, B, T
        self.llama = p["family"] == "llama"
        self.L, self.C, self.NH, self.V, self.Vp = p["L"], p["C"], p["NH"], p["V"], p["Vp"]
        self.NKV = p.get("NKV", self.NH)
        self.D = self.C // self.NH
        self.I = p.get("I", 4 * self.C)  # hidden()
        self.Q = (self.NH + 2 * self.NKV) * self.D  # qkv_width()
        self.F = 2 * self.I if self.llama else self.I  # fc_width()
        self.tied = p.get("tied", True)
        self.maxT = p["maxT"]
        self.N = B * T
        self.tensors = self._tensor_sizes()
        self.P = sum(self.tensors.values())

    def _tensor_sizes(self):
        # config.cpp tensor_sizes: the 17 slots, zero-size ones dropped.
        L, C, Vp, Q, F, I = self.L, self.C, self.Vp, self.Q, self.F, self.I
        g = not self.llama
        s = {
            "wte": Vp * C, "wpe": self.maxT * C if g else 0, "ln1w": L * C,
            "ln1b": L * C if g else 0, "qkvw": L * Q * C, "qkvb": L * Q if g else 0,
            "attprojw": L * C * C, "attprojb": L * C if g else 0, "ln2w": L * C,
            "ln2b": L * C if g else 0, "fcw": L * F * C, "fcb": L * F if g else 0,
            "fcprojw": L * C * I, "fcprojb": L * C if g else 0, "lnfw": C,
            "lnfb": C if g else 0, "lm_head": 0 if self.tied else Vp * C,
        }
        return {k: v for k, v in s.items() if v}

    def describe(self):
        if self.llama:
            return (f"llama L={self.L} C={self.C} NH={self.NH} NKV={self.NKV} D={self.D} "
                    f"I={self.I} V={self.V} Vp={self.Vp}")
        return (f"GPT-2 L={self.L} C={self.C} NH={self.NH} NKV={self.NKV} D={self.D} I={self.I} "
                f"V={self.V} Vp={self.Vp}")


class Call:
    """One kernel (or one group of identical kernels) of the step."""

    def __init__(self, name, calls, nbytes, flops, unit, group, launches=1, attn=None):
        self.name, self.calls, self.bytes, self.flops = name, calls, float(nbytes), float(flops)
        self.unit = unit  # "tensor" (bf16 tensor cores) or "fp32" (CUDA cores)
        self.group = group  # "gemm", "attention" or "memory"
        self.launches = launches  # kernel launches per call
        self.attn = attn  # attention: "fwd" or "bwd"

    def floor(self, m):
        _, bw, tc, fp32 = m
        peak = tc if self.unit == "tensor" else fp32
        t_mem, t_fl = self.bytes / bw, self.flops / peak
        return max(t_mem, t_fl), ("FLOPs" if t_fl > t_mem else "bytes")

    def predict(self, m, scenario):
        _, bw, tc, _ = m
        t_mem = self.bytes / (MEM_EFF * bw)
        if self.group == "gemm":
            t = max(t_mem, self.flops / (GEMM_EFF * tc))
        elif self.group == "attention":
            _, fwd, bwd = scenario
            t = max(t_mem, self.flops / (fwd if self.attn == "fwd" else bwd))
        else:
            t = max(t_mem, self.floor(m)[0])
        return t + self.launches * LAUNCH_GAP_S


def gelu_fused(m, recompute):
    """cuda_backend.h: GeLU in the cuBLASLt epilogues, bf16 default, --recompute 0."""
    return not m.llama and recompute == 0


def attention_tc(m):
    """ops_cuda.h attention_tc_supported: kv heads dividing heads, D = 64 or 128."""
    return m.NH % m.NKV == 0 and m.D in (64, 128)


def norm_slots(C):
    """layernorm.cu / rmsnorm.cu col_slots: row slots S of the backward's column
    pass, the largest power of two <= 8 with S * (C / 8 bf16 packs) <= 256."""
    packs, s = max(C // 8, 1), 1
    while s < 8 and 2 * s * packs <= 256:
        s *= 2
    return s


def step_calls(m, recompute=0):
    """The step's kernels in order: transformer.h over cuda_backend.h."""
    B, T, N, C, L = m.B, m.T, m.N, m.C, m.L
    NH, NKV, D, Q, F, I, V, Vp = m.NH, m.NKV, m.D, m.Q, m.F, m.I, m.V, m.Vp
    s = BF16
    NC = N * C
    calls = []
    fused = gelu_fused(m, recompute)

    def add(*a, **k):
        calls.append(Call(*a, **k))

    # matmul.cu: forward (N*IC + OC*IC + N*OC)*s (+ bias; + N*OC*s for the
    # GELU_AUX_BIAS epilogue's pre-activation); backward as two cuBLASLt GEMMs: dinp
    # reads dout and W and writes dinp (DGELU epilogue: also reads the
    # pre-activation); dweight reads dout and inp and read-modify-writes the fp32
    # gradient, with the BGRADB epilogue writing the bias gradient (OC floats) into
    # scratch, then one kernel adds it to dbias (3*OC*4 bytes). FLOPs 2*N*IC*OC per
    # GEMM; the epilogues' element-wise work (GeLU, gelu', the bias sum over N) runs
    # on the GEMM's tiles and is not counted.
    def mm_fwd(tag, IC, OC, bias, n=L, gelu=False):
        name = f"matmul_forward {tag}{' + GELU_AUX_BIAS epilogue' if gelu else ''} ({IC}->{OC})"
        add(name, n, (N * IC + OC * IC + N * OC * (2 if gelu else 1) + (OC if bias else 0)) * s,
            2 * N * IC * OC, "tensor", "gemm")

    def mm_bwd(tag, IC, OC, bias, n=L, dgelu=False):
        add(f"matmul_backward {tag} dinp{' + DGELU epilogue' if dgelu else ''}", n,
            (N * OC + OC * IC + N * IC * (2 if dgelu else 1)) * s, 2 * N * IC * OC, "tensor",
            "gemm")
        add(f"matmul_backward {tag} dweight{' + BGRADB epilogue' if bias else ''}", n,
            (N * OC + N * IC) * s + 2 * F32 * OC * IC + (F32 * OC if bias else 0),
            2 * N * IC * OC, "tensor", "gemm")
        if bias:
            add(f"matmul_backward {tag} dbias add", n, 3 * F32 * OC, OC, "fp32", "memory")

    # attention_fa2.cu (chosen for bf16, D = 64 or 128, any kv heads dividing the
    # heads): K = B*NH*D*T(T+1)/2 multiply-adds per causal triangle GEMM; forward
    # 4K FLOPs, one launch; backward 10K useful, 14K executed, two launches (dQ, which
    # also writes Drow, then dK/dV, which reads it). Forward reads qkv, writes out
    # and lse; backward reads qkv, out, dout, lse, writes dqkv and Drow and reads
    # Drow again.
    if not attention_tc(m):
        raise SystemExit(f"{m.name}: attention would take the fp32 kernels (D={D}, "
                         f"NH={NH}, NKV={NKV}); this script models attention_fa2.cu only")
    K = B * NH * D * T * (T + 1) / 2
    lse = F32 * N * NH
    attn_fwd_bytes = N * Q * s + N * NH * D * s + lse
    attn_bwd_bytes = N * Q * s + 2 * N * NH * D * s + lse + N * Q * s + 2 * lse

    # norms: layernorm.cu / rmsnorm.cu. Backward: kernel 1, G = min(ceil(N/8), 512)
    # blocks of 8 warps (warp per row, 8-row tiles), writes G*S partial rows ([G*S,
    # 2C] LayerNorm, [G*S, C] RMSNorm, fp32) that kernel 2 reads and adds to the
    # weight (and bias) gradients.
    G = min((N + 7) // 8, 512)
    S = norm_slots(C)
    if m.llama:
        norm = "rmsnorm"
        norm_fwd = (2 * NC * s + C * s + F32 * N, 4 * NC)
        res_norm_fwd = (4 * NC * s + C * s + F32 * N, 5 * NC)
        norm_apply = (2 * NC * s + C * s + F32 * N, 2 * NC)
        norm_bwd = (4 * NC * s + C * s + F32 * N + 2 * G * S * C * F32 + 2 * F32 * C, 12 * NC)
    else:
        norm = "layernorm"
        norm_fwd = (2 * NC * s + 2 * C * s + 2 * F32 * N, 8 * NC)
        res_norm_fwd = (4 * NC * s + 2 * C * s + 2 * F32 * N, 9 * NC)
        norm_apply = (2 * NC * s + 2 * C * s + 2 * F32 * N, 4 * NC)
        norm_bwd = (4 * NC * s + C * s + 2 * F32 * N + 2 * G * S * 2 * C * F32
                    + 4 * F32 * C, 17 * NC)
    bias = not m.llama
    # rope.cu: 2*B*T*H*D*s + the cos/sin table (T*D/2 each, fp32); FLOPs 3*B*T*H*D.
    H = NH + NKV
    rope = (2 * N * H * D * s + T * D * F32, 3 * N * H * D)
    # gelu.cu: 2n*s / 3n*s, 10n / 18n FLOPs; swiglu.cu: 3*N*I*s / 5*N*I*s, ~6 / 12 per output.
    nI = N * I

    # ---- zero_grad (trainer, before the forward) ----
    add("zero_grad (memset)", 1, F32 * m.P, 0, "fp32", "memory")
    # ---- forward ----
    # encoder.cu: reads the wte row (+ the wpe row), writes out, + 4N of tokens.
    add("encoder_forward", 1, (2 if m.llama else 3) * NC * s + F32 * N, NC, "fp32", "memory")
    add(f"{norm}_forward (layer 0 ln1)", 1, *norm_fwd, "fp32", "memory")
    mm_fwd("qkv", C, Q, bias)
    if m.llama:
        add("rope_forward (q, k)", L, *rope, "fp32", "memory")
    add("attention_forward_tc (attention_fa2.cu)", L, attn_fwd_bytes, 4 * K, "tensor",
        "attention", attn="fwd")
    mm_fwd("attproj", NH * D, C, bias)
    add(f"residual_{norm}_forward", 2 * L, *res_norm_fwd, "fp32", "memory")
    mm_fwd("fc", C, F, bias, gelu=fused)
    if m.llama:
        add("swiglu_forward", L, 3 * nI * s, 6 * nI, "fp32", "memory")
    elif not fused:
        add("gelu_forward", L, 2 * nI * s, 10 * nI, "fp32", "memory")
    mm_fwd("fcproj", I, C, bias)
    mm_fwd("logits", C, Vp, False, n=1)
    # classifier.cu: 3*N*Vp*s with dlogits (read, read, write), + 8N (targets in, losses
    # out); ~5*N*V FLOPs. Compulsory: 2*N*Vp*s, the 2nd read of a row is an L2 hit.
    add("classifier_forward_backward", 1, 2 * N * Vp * s + 8 * N, 5 * N * V, "fp32", "memory")
    # ---- backward ----
    mm_bwd("logits", C, Vp, False, n=1)
    add("memset dres", 1, NC * s, 0, "fp32", "memory")
    add(f"{norm}_backward (2 kernels)", 2 * L + 1, *norm_bwd, "fp32", "memory", launches=2)
    if recompute >= 1:
        if m.llama:
            add("swiglu_forward (recompute)", L, 3 * nI * s, 6 * nI, "fp32", "memory")
        else:
            add("gelu_forward (recompute)", L, 2 * nI * s, 10 * nI, "fp32", "memory")
    mm_bwd("fcproj", I, C, bias, dgelu=fused)
    if m.llama:
        add("swiglu_backward", L, 5 * nI * s, 12 * nI, "fp32", "memory")
    elif not fused:
        add("gelu_backward", L, 3 * nI * s, 18 * nI, "fp32", "memory")
    if recompute >= 2:
        add(f"{norm}_apply (recompute ln1, ln2)", 2 * L, *norm_apply, "fp32", "memory")
    mm_bwd("fc", C, F, bias)
    mm_bwd("attproj", NH * D, C, bias)
    add("attention_backward_tc (dQ + Drow, dK/dV)", L, attn_bwd_bytes, 14 * K, "tensor",
        "attention", launches=2, attn="bwd")
    if m.llama:
        add("rope_backward (dq, dk)", L, *rope, "fp32", "memory")
    mm_bwd("qkv", C, Q, bias)
    # encoder.cu backward: dout read once per gradient (wte; wpe for GPT-2) and the
    # fp32 read-modify-write of the touched rows: T rows of dwpe and at most
    # min(V, N) distinct tokens of dwte (counted at that bound).
    distinct = min(V, N)
    if m.llama:
        add("encoder_backward (dwte)", 1, NC * s + distinct * C * 2 * F32, NC, "fp32", "memory")
    else:
        add("encoder_backward (dwte, dwpe)", 1, 2 * NC * s + (T + distinct) * C * 2 * F32,
            2 * NC, "fp32", "memory", launches=2)
    # ---- gradient norm, clipping, AdamW (global_norm.cu, adamw.cu), one call per tensor ----
    nt = len(m.tensors)
    add(f"grad_sum_squares ({nt} tensors)", 1, F32 * m.P, 2 * m.P, "fp32", "memory",
        launches=2 * nt)
    add("scale_grads (clip)", 1, 2 * F32 * m.P, m.P, "fp32", "memory")
    add(f"adamw_update ({nt} tensors)", 1, (28 + BF16) * m.P, 15 * m.P, "fp32", "memory",
        launches=nt)
    return calls


def fmt_int(x):
    return f"{int(round(x)):,}"


def report(m, recompute, out):
    calls = step_calls(m, recompute)
    w = out.write
    w(f"### {m.name}: {m.describe()}, B={m.B}, T={m.T}, recompute {recompute}\n\n")
    if m.llama:
        mlp = "SwiGLU by its own kernels"
    elif gelu_fused(m, recompute):
        mlp = "GeLU in the cuBLASLt GELU_AUX_BIAS / DGELU epilogues"
    else:
        mlp = "GeLU by its own kernels (no epilogue fusion with --recompute >= 1)"
    w(f"Tokens per step N = {fmt_int(m.N)}; parameters P = {fmt_int(m.P)} "
      f"({len(m.tensors)} tensors); attention on the tensor cores (attention_fa2.cu"
      f"{', grouped-query' if m.NKV != m.NH else ''}); {mlp}"
      f"{'; bias gradients by the BGRADB epilogue + one add kernel' if not m.llama else ''}."
      f"\n\n")
    w("| # | kernel | part | calls | MB/call | GFLOP/call | unit |")
    for name, *_ in MACHINES:
        w(f" {name} floor us/call | bound |")
    for name, *_ in MACHINES:
        w(f" {name} step ms |")
    w("\n|" + " ---: | --- | --- | ---: | ---: | ---: | --- |" + " ---: | --- |" * len(MACHINES)
      + " ---: |" * len(MACHINES) + "\n")
    totals = {mach[0]: {"gemm": 0.0, "attention": 0.0, "memory": 0.0} for mach in MACHINES}
    tb = {"gemm": 0.0, "attention": 0.0, "memory": 0.0}
    tf = dict(tb)
    for i, c in enumerate(calls, 1):
        w(f"| {i} | {c.name} | {c.group} | {c.calls} | {c.bytes / 1e6:.3f} | {c.flops / 1e9:.3f} "
          f"| {c.unit} |")
        steps = []
        for mach in MACHINES:
            t, bound = c.floor(mach)
            w(f" {t * 1e6:.2f} | {bound} |")
            steps.append(c.calls * t)
            totals[mach[0]][c.group] += c.calls * t
        for t in steps:
            w(f" {t * 1e3:.3f} |")
        w("\n")
        tb[c.group] += c.calls * c.bytes
        tf[c.group] += c.calls * c.flops
    w("\n")
    labels = {"gemm": "gemm: GEMMs (cuBLASLt)", "attention": "attention (executed FLOPs)",
              "memory": "memory: memory-bound kernels"}
    w("| part | TFLOP | GB |" + "".join(f" {n} floor ms |" for n, *_ in MACHINES) + "\n")
    w("| --- | ---: | ---: |" + " ---: |" * len(MACHINES) + "\n")
    for g in ("gemm", "attention", "memory"):
        w(f"| {labels[g]} | {tf[g] / 1e12:.3f} | {tb[g] / 1e9:.3f} |")
        for n, *_ in MACHINES:
            w(f" {totals[n][g] * 1e3:.3f} |")
        w("\n")
    w(f"| step | {sum(tf.values()) / 1e12:.3f} | {sum(tb.values()) / 1e9:.3f} |")
    floors = {}
    for n, *_ in MACHINES:
        floors[n] = sum(totals[n].values())
        w(f" {floors[n] * 1e3:.3f} |")
    w("\n\n")
    # MFU: llm.c's count 6P + 6*L*C*T per token (attention halved for causality).
    llmc = 6 * m.P + 6 * m.L * m.C * m.T
    w(f"Model FLOPs per token (llm.c's count, 6P + 6LCT): {llmc / 1e6:.1f} MFLOP. ")
    for n, *_ in MACHINES:
        tok = m.N / floors[n]
        w(f"At the floor, {n}: {tok / 1e3:.0f}k tok/s, MFU {100 * tok * llmc / 989e12:.0f}%. ")
    w("\n\n")
    w("Predicted step time (assumptions above):\n\n")
    w("| machine | attention | GEMMs ms | attention ms | memory-bound ms | launch gaps ms | "
      "host ms | step ms | tok/s | MFU (llm.c count) |\n")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    for mach in MACHINES:
        for sc in SCENARIOS:
            part = {"gemm": 0.0, "attention": 0.0, "memory": 0.0}
            gaps = 0.0
            for c in calls:
                t = c.predict(mach, sc)
                gap = c.launches * LAUNCH_GAP_S
                part[c.group] += c.calls * (t - gap)
                gaps += c.calls * gap
            step = sum(part.values()) + gaps + HOST_S
            tok = m.N / step
            w(f"| {mach[0]} | {sc[0]} | "
              f"{part['gemm'] * 1e3:.1f} | {part['attention'] * 1e3:.1f} | "
              f"{part['memory'] * 1e3:.1f} | {gaps * 1e3:.1f} | {HOST_S * 1e3:.1f} | "
              f"{step * 1e3:.1f} | {tok / 1e3:.0f}k | {100 * tok * llmc / 989e12:.0f}% |\n")
    w("\n")


def header(out):
    w = out.write
    w("Machines (data sheets; dense bf16 = half the \"with sparsity\" figure):\n\n")
    w("| machine | HBM TB/s | bf16 tensor TFLOP/s (dense) | fp32 TFLOP/s |\n")
    w("| --- | ---: | ---: | ---: |\n")
    for name, bw, tc, fp32 in MACHINES:
        w(f"| {name} | {bw / 1e12:.2f} | {tc / 1e12:.0f} | {fp32 / 1e12:.0f} |\n")
    w("\n")
    w("Bytes are a call's compulsory DRAM traffic: each input read once, each output "
      "written once, a read-modify-write (fp32 weight gradients that cuBLASLt accumulates, "
      "`dinp +=` of the norm backwards, AdamW's state) twice; re-reads the kernels serve "
      "from L1/L2 by design (the norms' 2nd pass over a row, the classifier's 2nd pass, "
      "attention's K/V tiles) are not counted. FLOPs: 2*M*N*K per GEMM; attention as its "
      "kernel headers count them (K = B*NH*D*T(T+1)/2 multiply-adds per causal triangle: "
      "forward 4K, backward 14K executed, 10K useful); element-wise FLOPs from the kernel "
      "headers; the element-wise work of the cuBLASLt epilogues (bias, GeLU, gelu', the "
      "bias gradient's sum over tokens) runs on the GEMM's output tiles and is not counted, "
      "their extra bytes are (the pre-activation written by GELU_AUX_BIAS and read by "
      "DGELU; BGRADB's scratch vector). The encoder backward counts at most min(V, N) "
      "distinct tokens.\n\n")
    w("Floor of a call = max(bytes / bandwidth, FLOPs / peak), peak by the unit column "
      "(tensor: bf16 tensor cores; fp32: CUDA cores). Step ms = calls x floor; the step "
      "floor adds the calls as if they ran back to back.\n\n")
    w(f"Prediction (assumptions, not measurements): GEMMs at {GEMM_EFF:.0%} of the tensor "
      "peak, as cuBLASLt bf16 typically reaches at these shapes; memory-bound kernels at "
      f"{MEM_EFF:.0%} of the bandwidth; {LAUNCH_GAP_S * 1e6:.1f} us of idle time per kernel "
      f"launch; an estimate of {HOST_S * 1e3:.1f} ms a step in which the GPU waits for the "
      "host (one synchronisation per step, at its end, for the loss and the gradient norm; "
      "then loading the next batch, its page-locked uploads and queueing its first "
      "micro-batch: from the third step on each forward, backward, clipping and update "
      "is one CUDA graph launch instead of up to several hundred kernel launches), "
"unmeasured. Attention: " + ATTN_NOTE + "\n\n")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(PRESETS), help="one preset (default: 124M and "
                    "llama-1B)")
    ap.add_argument("--batch", type=int, help="micro-batch B (default: 64 GPT-2, 8 Llama)")
    ap.add_argument("--seq", type=int, help="sequence length T (default: 1024 GPT-2, 2048 Llama)")
    ap.add_argument("--recompute", type=int, default=0, choices=(0, 1, 2))
    a = ap.parse_args(argv)
    names = [a.model] if a.model else ["124M", "llama-1B"]
    models = []
    for name in names:
        fam = PRESETS[name]["family"]
        B = a.batch if a.batch is not None else DEFAULT_SHAPES[fam][0]
        T = a.seq if a.seq is not None else DEFAULT_SHAPES[fam][1]
        if B < 1 or T < 1 or T > PRESETS[name]["maxT"] or B * T > 2**31 - 1:
            print(f"--batch/--seq: need B >= 1, 1 <= T <= {PRESETS[name]['maxT']}, "
                  f"B*T < 2^31 for {name}", file=sys.stderr)
            return 2
        models.append(Model(name, B, T))
    header(sys.stdout)
    for m in models:
        report(m, a.recompute, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
