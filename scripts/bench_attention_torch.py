#!/usr/bin/env python3
"""PyTorch's fused causal attention at the GPT-2 shapes of `myelin bench --device cuda`.

Times torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True) in bf16,
q/k/v of shape [B, NH, T, hs] (contiguous), for each SDPA backend this PyTorch offers
(flash, cuDNN, memory-efficient; math on request), so that the attention rows of Myelin's
kernel benchmark (attention_fwd / attention_bwd, attention_tc_*) have a library peer.

Method (the same as runtime/bench/cuda_kernels_bench.cpp):
  * shapes: B=8, T=1024 (the benchmark's defaults) and the heads of GPT-2 124M (NH 12),
    350M (16), 774M (20), 1.5B (25), all with hs 64;
  * inputs: random normal (never zeros), fixed seed;
  * every repetition: the L2 is flushed first (a write of a buffer of 2 x L2 size), the
    GPU is kept busy for ~1 ms (torch.cuda._sleep) so that Python's launch overhead is
    hidden, then the call alone is timed with CUDA events; the median is reported;
  * forward: one SDPA call (no autograd graph);
  * backward: timed directly: a forward is recorded once with requires_grad, then each
    repetition runs torch.autograd.grad(out, (q, k, v), dout, retain_graph=True) alone;
    "fwd+bwd" is also timed directly (forward with graph, then the same backward);
  * FLOPs as Myelin counts them: causal = B*NH*T(T+1)/2*hs, forward 4*causal,
    backward 10*causal;
  * check: each backend's forward output against the first available backend's
    (max |diff|), to catch a backend that runs but computes something else.

Usage: python3 scripts/bench_attention_torch.py [--models 124M,350M,774M,1.5B]
           [--batch 8] [--seq 1024] [--reps 20] [--warmup 3] [--backends flash,cudnn,efficient]
           [--json OUT.json]
Without PyTorch, without a CUDA device or without SDPA it prints "skipped: ..." and
exits 0; a backend that is missing or refuses the shape shows as "unavailable".
"""
import argparse
import json
import statistics
import sys

MODELS = {"124M": (12, 768), "350M": (16, 1024), "774M": (20, 1280), "1.5B": (25, 1600)}
BACKENDS = ["flash", "cudnn", "efficient", "math"]
SLEEP_CYCLES = 2_000_000  # ~1 ms at H100/H200 clocks


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="124M,350M,774M,1.5B", help="GPT-2 sizes (NH, C)")
    p.add_argument("--batch", type=int, default=8, help="B (myelin bench's default: 8)")
    p.add_argument("--seq", type=int, default=1024, help="T (myelin bench's default: 1024)")
    p.add_argument("--reps", type=int, default=20, help="timed repetitions (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--backends", default="flash,cudnn,efficient",
                   help="comma list of flash, cudnn, efficient, math")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in a.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r} (expected {', '.join(MODELS)})")
    a.backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    for b in a.backends:
        if b not in BACKENDS:
            p.error(f"unknown backend {b!r} (expected {', '.join(BACKENDS)})")
    if a.batch < 1 or a.seq < 1 or a.reps < 1 or a.warmup < 0:
        p.error("batch, seq and reps must be positive, warmup >= 0")
    return a


def skip(args, reason, extra=None):
    print(f"skipped: {reason}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(skipped=reason, **(extra or {})), f, indent=1)
    sys.exit(0)


def backend_context(torch, name):
    """A context manager that restricts SDPA to one backend, or None if unavailable."""
    try:  # PyTorch >= 2.3
        from torch.nn.attention import SDPBackend, sdpa_kernel
        enum = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                "efficient": "EFFICIENT_ATTENTION", "math": "MATH"}[name]
        if not hasattr(SDPBackend, enum):
            return None
        return lambda: sdpa_kernel([getattr(SDPBackend, enum)])
    except ImportError:
        pass
    if name == "cudnn":
        return None
    try:  # PyTorch 2.0 - 2.2
        f = torch.backends.cuda.sdp_kernel
    except AttributeError:
        return None
    flags = dict(enable_flash=name == "flash", enable_mem_efficient=name == "efficient",
                 enable_math=name == "math")
    return lambda: f(**flags)


def main():
    args = parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 (any import failure means: no PyTorch here)
        skip(args, f"PyTorch is not installed ({type(e).__name__}: {e})")
    if not torch.cuda.is_available():
        skip(args, "no CUDA device", dict(torch=torch.__version__))
    if not hasattr(F, "scaled_dot_product_attention"):
        skip(args, f"PyTorch {torch.__version__} has no scaled_dot_product_attention (needs >= 2.0)",
             dict(torch=torch.__version__))

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 0) or 50 * 2**20
    flush_buf = torch.empty(2 * l2, dtype=torch.uint8, device=dev)
    dtype = torch.bfloat16
    B, T = args.batch, args.seq
    # A GPU-side spin (about 1 ms) before each start event: the Python launch overhead of
    # the timed call then overlaps it instead of showing up as an idle gap inside the
    # measured interval (the 124M forward itself is only tens of microseconds).
    sleep = getattr(torch.cuda, "_sleep", None)

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(args.reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(args.reps)]
        for s, e in zip(starts, ends):
            flush_buf.fill_(1)  # write 2 x L2: nothing of the inputs stays cached
            if sleep is not None:
                sleep(SLEEP_CYCLES)  # keeps the GPU busy while Python enqueues the call
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))

    rows = []
    for model in args.models:
        NH, C = MODELS[model]
        hs = C // NH
        gen = torch.Generator(device=dev)
        gen.manual_seed(1234)
        shape = (B, NH, T, hs)
        q, k, v, dout = (torch.randn(shape, device=dev, dtype=dtype, generator=gen) for _ in range(4))
        causal = B * NH * (T * (T + 1) / 2) * hs
        flops_f, flops_b = 4 * causal, 10 * causal
        ref = None
        for name in args.backends:
            row = dict(model=model, B=B, NH=NH, T=T, hs=hs, backend=name, status="ok")
            ctx = backend_context(torch, name)
            if ctx is None:
                row["status"] = "unavailable (not in this PyTorch)"
                rows.append(row)
                continue
            try:
                with ctx():
                    with torch.no_grad():
                        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    torch.cuda.synchronize()
                    if ref is None:
                        ref = out.float()
                        row["max_abs_diff"] = 0.0
                    else:
                        row["max_abs_diff"] = float((out.float() - ref).abs().max())

                    def fwd():
                        with torch.no_grad():
                            F.scaled_dot_product_attention(q, k, v, is_causal=True)

                    row["fwd_ms"] = timed(fwd)
                    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
                    og = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)

                    def bwd():
                        torch.autograd.grad(og, (qg, kg, vg), dout, retain_graph=True)

                    row["bwd_ms"] = timed(bwd)

                    def fwd_bwd():
                        o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
                        torch.autograd.grad(o, (qg, kg, vg), dout)

                    row["fwd_bwd_ms"] = timed(fwd_bwd)
            except Exception as e:  # noqa: BLE001 (the backend refuses this shape, dtype or GPU)
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                row = dict(model=model, B=B, NH=NH, T=T, hs=hs, backend=name,
                           status=f"unavailable ({msg[:120]})")
                torch.cuda.synchronize()
            if "fwd_ms" in row:
                row["fwd_tflops"] = flops_f / (row["fwd_ms"] * 1e-3) / 1e12
                row["bwd_tflops"] = flops_b / (row["bwd_ms"] * 1e-3) / 1e12
                row["fwd_bwd_tflops"] = (flops_f + flops_b) / (row["fwd_bwd_ms"] * 1e-3) / 1e12
            rows.append(row)
        torch.cuda.empty_cache()

    print(f"device: {props.name} | torch {torch.__version__} | CUDA {torch.version.cuda} | "
          f"cuDNN {torch.backends.cudnn.version()} | L2 {l2 / 2**20:.0f} MiB (flush 2x)")
    print(f"SDPA causal bf16, q/k/v [B, NH, T, hs] contiguous; median of {args.reps} reps after "
          f"{args.warmup} warmup, L2 flushed and launch overhead hidden; bwd timed directly (autograd.grad on a saved graph), "
          f"fwd+bwd timed together; FLOPs: fwd 4, bwd 10 x B*NH*T(T+1)/2*hs")
    hdr = (f"{'model':<6} {'shape':<22} {'backend':<10} {'fwd ms':>8} {'TFLOP/s':>8} "
           f"{'bwd ms':>8} {'TFLOP/s':>8} {'f+b ms':>8} {'TFLOP/s':>8} {'max|diff|':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        shape = f"B{r['B']} NH{r['NH']} T{r['T']} hs{r['hs']}"
        if "fwd_ms" not in r:
            print(f"{r['model']:<6} {shape:<22} {r['backend']:<10} {r['status']}")
            continue
        print(f"{r['model']:<6} {shape:<22} {r['backend']:<10} {r['fwd_ms']:>8.3f} "
              f"{r['fwd_tflops']:>8.1f} {r['bwd_ms']:>8.3f} {r['bwd_tflops']:>8.1f} "
              f"{r['fwd_bwd_ms']:>8.3f} {r['fwd_bwd_tflops']:>8.1f} {r['max_abs_diff']:>9.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=props.name, torch=torch.__version__, cuda=torch.version.cuda,
                           cudnn=torch.backends.cudnn.version(), l2_bytes=l2, batch=B, seq=T,
                           reps=args.reps, warmup=args.warmup, dtype="bf16",
                           bwd_method="direct: autograd.grad on a saved graph (retain_graph)",
                           flops="fwd 4*causal, bwd 10*causal, causal=B*NH*T(T+1)/2*hs",
                           rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
