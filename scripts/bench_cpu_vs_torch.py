#!/usr/bin/python3
"""CPU training throughput: `myelin train` against an equivalent eager PyTorch
GPT-2 training loop, same shapes, fp32, AdamW, gradient clipping at 1.0, the
same number of threads, random tokens.

Usage: /usr/bin/python3 scripts/bench_cpu_vs_torch.py [--myelin build/myelin]
           [--rounds 2] [--steps 25] [--warmup 5] [--shapes big,small] [--out FILE.md]

Each round runs Myelin then PyTorch for every shape (myelin, torch, myelin,
torch, ...); every run is its own process. A run's throughput is the median tokens/s of its steps after the
warm-up steps, and the reported figure is the median over rounds. Myelin's
figures come from its --metrics-out JSON lines (tokens_per_s per step);
PyTorch's from wall-clock time around each step (forward, backward, clipping,
optimizer step). Before the rounds, a short calibration picks, per shape, the
faster of a few OpenMP environments for each program (see ENVS). Needs
python3-numpy and python3-torch (Debian packages).
"""
import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = {
    # name: L, C, NH, T, B, V, Vp
    "big": dict(L=4, C=256, NH=4, T=256, B=4, V=256, Vp=256),
    "small": dict(L=2, C=128, NH=4, T=128, B=8, V=256, Vp=256),
}


def write_shard(path, ntok, V, seed):
    header = np.zeros(256, dtype="<i4")
    header[:3] = [20240520, 1, ntok]
    toks = np.random.default_rng(seed).integers(0, V, size=ntok).astype("<u2")
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.tobytes())


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_isa():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                for isa in ("avx512f", "avx2", "avx"):
                    if isa in flags:
                        return isa
    except OSError:
        pass
    return "?"


# ---- Myelin -------------------------------------------------------------------

def myelin_cmd(binary, s, shard, steps, metrics, threads):
    return [binary, "train", "--layers", str(s["L"]), "--heads", str(s["NH"]),
            "--channels", str(s["C"]), "--vocab", str(s["V"]), "--padded-vocab", str(s["Vp"]),
            "--max-seq-len", str(s["T"]), "--batch-size", str(s["B"]), "--seq-len", str(s["T"]),
            "--train-data", shard, "--steps", str(steps), "--lr", "3e-4",
            "--lr-schedule", "constant", "--weight-decay", "0", "--grad-clip", "1.0",
            "--threads", str(threads), "--metrics-out", metrics, "--quiet"]


def run_myelin(binary, s, shard, steps, warmup, threads, tmp, env_extra):
    metrics = os.path.join(tmp, "metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    env = dict(os.environ)
    env.update(env_extra)
    subprocess.run(myelin_cmd(binary, s, shard, steps, metrics, threads), check=True, env=env)
    rows = [json.loads(l) for l in open(metrics) if l.strip()]
    tps = [r["tokens_per_s"] for r in rows[warmup:]]
    return statistics.median(tps), statistics.median(r["ms"] for r in rows[warmup:])


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def myelin_cpu_ms_per_step(binary, s, shard, steps, warmup, tmp, env_extra):
    """CPU time (user + sys) of one step: the difference between a run of
    warmup + steps steps and one of warmup steps, so start-up is not counted."""
    metrics = os.path.join(tmp, "cpu_metrics.jsonl")
    env = dict(os.environ)
    env.update(env_extra)
    used = []
    for n in (warmup, warmup + steps):
        if os.path.exists(metrics):
            os.remove(metrics)
        c0 = children_cpu_s()
        subprocess.run(myelin_cmd(binary, s, shard, n, metrics, 1), check=True, env=env)
        used.append(children_cpu_s() - c0)
    return (used[1] - used[0]) * 1000.0 / steps


# ---- PyTorch ------------------------------------------------------------------

def torch_model(torch, s, attn):
    nn, F = torch.nn, torch.nn.functional
    L, C, NH, T, V, Vp = s["L"], s["C"], s["NH"], s["T"], s["V"], s["Vp"]
    hs = C // NH
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    sdpa_private = getattr(F, "_scaled_dot_product_attention", None)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(C, eps=1e-5)
            self.qkv = nn.Linear(C, 3 * C)
            self.proj = nn.Linear(C, C)
            self.ln2 = nn.LayerNorm(C, eps=1e-5)
            self.fc = nn.Linear(C, 4 * C)
            self.fcproj = nn.Linear(4 * C, C)
            self.register_buffer("mask", torch.ones(T, T, dtype=torch.bool).triu(1),
                                 persistent=False)

        def attention(self, x):
            B, Tn, _ = x.shape
            q, k, v = self.qkv(x).view(B, Tn, 3, NH, hs).permute(2, 0, 3, 1, 4)
            if attn == "sdpa" and sdpa is not None:
                y = sdpa(q, k, v, is_causal=True)
            elif attn == "sdpa" and sdpa_private is not None:   # torch 1.13's name
                y = sdpa_private(q, k, v, None, 0.0, False, True)[0]
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
                att = att.masked_fill(self.mask[:Tn, :Tn], float("-inf")).softmax(-1)
                y = att @ v
            return self.proj(y.transpose(1, 2).reshape(B, Tn, C))

        def forward(self, x):
            x = x + self.attention(self.ln1(x))
            return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(Vp, C)
            self.wpe = nn.Embedding(T, C)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.lnf = nn.LayerNorm(C, eps=1e-5)
            self.register_buffer("pos", torch.arange(T), persistent=False)
            for p in self.parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(self.pos[: idx.shape[1]])
            for b in self.blocks:
                x = b(x)
            logits = F.linear(self.lnf(x), self.wte.weight)      # tied, Vp columns
            return F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1))

    return GPT()


def run_torch(torch, s, tokens, steps, warmup, attn):
    torch.manual_seed(1337)
    model = torch_model(torch, s, attn)
    kw = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    try:
        opt = torch.optim.AdamW(model.parameters(), foreach=True, **kw)
    except TypeError:
        opt = torch.optim.AdamW(model.parameters(), **kw)
    B, T = s["B"], s["T"]
    n = B * T
    nb = (len(tokens) - 1) // n
    times, cpu0 = [], time.process_time()
    for step in range(steps):
        k = step % nb
        buf = torch.from_numpy(tokens[k * n: k * n + n + 1].astype(np.int64))
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        if step == warmup:
            cpu0 = time.process_time()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    cpu_ms = (time.process_time() - cpu0) * 1000.0 / (steps - warmup)
    t = statistics.median(times[warmup:])
    return n / t, t * 1000.0, cpu_ms


# ---- main -----------------------------------------------------------------------

def torch_worker(a):
    """One PyTorch run in its own process (so OpenMP settings in the
    environment take effect); prints {"tps", "ms"} as JSON."""
    import torch
    torch.set_num_threads(a.threads)
    s = SHAPES[a.torch_worker]
    tokens = np.fromfile(a.shard, dtype="<u2", offset=1024)
    tps, ms, cpu_ms = run_torch(torch, s, tokens, a.steps, a.warmup, a.torch_attn)
    print(json.dumps({"tps": tps, "ms": ms, "cpu_ms": cpu_ms}))


def run_torch_process(a, name, shard, env_extra, steps):
    env = dict(os.environ)
    env.update(env_extra)
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", name, "--shard", shard,
           "--steps", str(steps), "--warmup", str(a.warmup),
           "--threads", str(a.threads), "--torch-attn", a.torch_attn]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["tps"], r["ms"], r["cpu_ms"]


# Both programs run their element-wise work on GNU OpenMP threads, which spin
# after each parallel region by default; PyTorch runs its matmuls on OpenBLAS's
# own pthreads besides. On a small or shared machine spinning threads take the
# cores from the threads with work. Each side runs in each of these
# environments in a short calibration, and keeps the faster per shape.
ENVS = {
    "default": {},
    "omp-passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def cpu_pressure():
    """'some' CPU pressure over the last 10 s (%), or None: how much runnable
    work waited for a core, i.e. how busy the machine was with other jobs."""
    try:
        line = open("/proc/pressure/cpu").readline()
        return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def env_str(env):
    return " ".join(f"{k}={v}" for k, v in env.items()) or "(none)"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--myelin", default=os.path.join(here, "..", "build", "myelin"))
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds of the wall-clock comparison (0 = skip it)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--shapes", default="big,small")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--torch-attn", choices=["sdpa", "manual"], default="sdpa",
                    help="PyTorch attention: fused scaled_dot_product_attention or matmuls")
    ap.add_argument("--env", choices=["auto"] + list(ENVS), default="auto",
                    help="OpenMP environment of both programs (auto: calibrate and keep "
                         "the faster per program and shape)")
    ap.add_argument("--no-cpu-time", dest="cpu_time", action="store_false",
                    help="skip the one-thread CPU-time comparison")
    ap.add_argument("--cpu-steps", type=int, default=10,
                    help="measured steps of the CPU-time comparison")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    ap.add_argument("--shard", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a)

    import torch
    cfg = torch.__config__.show()
    mblas = re.search(r"BLAS_INFO=(\w+)", cfg)
    torch_blas_info = f"BLAS_INFO={mblas.group(1) if mblas else '?'}"
    try:   # the kernel set OpenBLAS picks here (OPENBLAS_CORETYPE overrides detection)
        import ctypes
        ob = ctypes.CDLL("libopenblas.so.0")
        ob.openblas_get_corename.restype = ctypes.c_char_p
        ob.openblas_get_config.restype = ctypes.c_char_p
        openblas_core = (f"{ob.openblas_get_config().decode()}, kernels for "
                         f"{ob.openblas_get_corename().decode()}")
    except (OSError, AttributeError):
        openblas_core = "?"
    try:
        ldd = subprocess.run(["ldd", os.path.join(os.path.dirname(torch.__file__), "lib",
                                                  "libtorch_cpu.so")],
                             capture_output=True, text=True).stdout
        torch_blas_libs = sorted({l.split("=>")[1].split("(")[0].strip() for l in ldd.splitlines()
                                  if "=>" in l and ("blas" in l or "mkl" in l or "dnnl" in l)})
        myelin_ldd = subprocess.run(["ldd", a.myelin], capture_output=True, text=True).stdout
        myelin_blas_libs = sorted({l.split("=>")[1].split("(")[0].strip()
                                   for l in myelin_ldd.splitlines()
                                   if "=>" in l and ("blas" in l or "mkl" in l)})
    except Exception:   # ldd missing: report what is known
        torch_blas_libs, myelin_blas_libs = [], []
    resolve = lambda ps: ", ".join(f"{p} -> {os.path.realpath(p)}" for p in ps) or "?"

    shapes = [x for x in a.shapes.split(",") if x]
    results = {name: {"myelin": [], "torch": [], "myelin_ms": [], "torch_ms": []}
               for name in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        shards = {}
        for name in shapes:
            s = SHAPES[name]
            ntok = s["B"] * s["T"] * (a.steps + 1) + 1
            shards[name] = os.path.join(tmp, f"{name}.bin")
            write_shard(shards[name], ntok, s["V"], seed=1)
        runners = {
            "myelin": lambda name, env, steps: run_myelin(a.myelin, SHAPES[name], shards[name],
                                                          steps, a.warmup, a.threads, tmp,
                                                          env) + (None,),
            "torch": lambda name, env, steps: run_torch_process(a, name, shards[name], env,
                                                                steps),
        }
        chosen = {}   # (program, shape) -> env name
        calib_lines = []
        for name in shapes:
            for prog, run in runners.items():
                if a.env != "auto" or a.rounds < 1:
                    chosen[prog, name] = "default" if a.env == "auto" else a.env
                    continue
                calib = {e: run(name, env, a.warmup + 5)[0] for e, env in ENVS.items()}
                chosen[prog, name] = max(calib, key=calib.get)
                line = (f"calibration {prog} {name}: " +
                        ", ".join(f"{k} {v:.0f} tok/s" for k, v in calib.items()) +
                        f" -> {chosen[prog, name]}")
                calib_lines.append(line)
                print(line, file=sys.stderr, flush=True)
        pressure = []
        for r in range(a.rounds):
            for name in shapes:
                pressure.append(cpu_pressure())
                m, mms, _ = runners["myelin"](name, ENVS[chosen["myelin", name]], a.steps)
                t, tms, _ = runners["torch"](name, ENVS[chosen["torch", name]], a.steps)
                results[name]["myelin"].append(m)
                results[name]["torch"].append(t)
                results[name]["myelin_ms"].append(mms)
                results[name]["torch_ms"].append(tms)
                print(f"round {r + 1} {name}: myelin {m:9.0f} tok/s ({mms:.1f} ms/step) | "
                      f"torch {t:9.0f} tok/s ({tms:.1f} ms/step)", file=sys.stderr, flush=True)
        pressure.append(cpu_pressure())
        # One thread each, CPU time per step: what a step costs in computation,
        # almost independent of other jobs competing for the cores.
        single = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        cpu_ms = {}
        if a.cpu_time:
            ta = argparse.Namespace(**vars(a))
            ta.threads = 1
            for name in shapes:
                mc = myelin_cpu_ms_per_step(a.myelin, SHAPES[name], shards[name], a.cpu_steps,
                                            a.warmup, tmp, single)
                tc = run_torch_process(ta, name, shards[name], single,
                                       a.warmup + a.cpu_steps)[2]
                cpu_ms[name] = (mc, tc)
                print(f"cpu time {name}: myelin {mc:.1f} ms/step | torch {tc:.1f} ms/step",
                      file=sys.stderr, flush=True)

    lines = []
    lines.append(f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, widest ISA {cpu_isa()}")
    lines.append(f"- threads: {a.threads} on both sides (Myelin --threads, "
                 f"torch.set_num_threads); OPENBLAS_CORETYPE="
                 f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, OMP_NUM_THREADS="
                 f"{os.environ.get('OMP_NUM_THREADS', '(unset)')}")
    lines.append(f"- OpenBLAS: {openblas_core}")
    lines.append(f"- Myelin BLAS: {resolve(myelin_blas_libs)} (single-threaded OpenBLAS calls "
                 f"inside OpenMP regions)")
    lines.append(f"- PyTorch {torch.__version__}: {torch_blas_info}, libtorch_cpu links "
                 f"{resolve(torch_blas_libs)}; eager mode, attention "
                 f"{a.torch_attn}, AdamW foreach")
    pr = [p for p in pressure if p is not None]
    if pr:
        lines.append(f"- machine load: CPU pressure (avg10, share of time runnable work waited "
                     f"for a core) {min(pr):.0f}-{max(pr):.0f}% during the rounds; load average "
                     f"{os.getloadavg()[0]:.1f} at the end")
    for line in calib_lines:
        lines.append(f"- {line}")
    if a.rounds >= 1:
        lines.append(f"- {a.rounds} rounds x {a.steps} steps, first {a.warmup} steps of each "
                     f"run dropped; medians")
        lines.append("")
    if a.rounds < 1:
        shapes_wall = []
    else:
        shapes_wall = shapes
        lines.append("| shape (L, C, NH, T, B) | tokens/step | Myelin tok/s | PyTorch tok/s "
                     "| Myelin ms/step | PyTorch ms/step | Myelin / PyTorch | environment "
                     "(Myelin / PyTorch) |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name in shapes_wall:
        s = SHAPES[name]
        m = statistics.median(results[name]["myelin"])
        t = statistics.median(results[name]["torch"])
        mms = statistics.median(results[name]["myelin_ms"])
        tms = statistics.median(results[name]["torch_ms"])
        lines.append(f"| {s['L']}, {s['C']}, {s['NH']}, {s['T']}, {s['B']} | {s['B'] * s['T']} "
                     f"| {m:.0f} | {t:.0f} | {mms:.1f} | {tms:.1f} | {m / t:.2f}x "
                     f"| {env_str(ENVS[chosen['myelin', name]])} / "
                     f"{env_str(ENVS[chosen['torch', name]])} |")
    if cpu_ms:
        lines.append("")
        lines.append(f"One thread each (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1), CPU time "
                     f"(user + sys) per step, mean of {a.cpu_steps} steps after {a.warmup} "
                     f"warm-up steps; this measures the computation and barely depends on "
                     f"other jobs:")
        lines.append("")
        lines.append("| shape (L, C, NH, T, B) | Myelin CPU ms/step | PyTorch CPU ms/step "
                     "| PyTorch / Myelin |")
        lines.append("| --- | ---: | ---: | ---: |")
        for name in shapes:
            s = SHAPES[name]
            mc, tc = cpu_ms[name]
            lines.append(f"| {s['L']}, {s['C']}, {s['NH']}, {s['T']}, {s['B']} | {mc:.1f} "
                         f"| {tc:.1f} | {tc / mc:.2f}x |")
    report = "\n".join(lines)
    print(report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
