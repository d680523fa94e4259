#!/usr/bin/python3
"""Independent float64 NumPy reference for training a Llama-family model as
Hugging Face's LlamaForCausalLM computes it: forward, a hand-written backward
and AdamW. Myelin's Llama reference test runs both on the same files. Token
shards, the sequential loader, AdamW, the training loop and the
finite-difference check are reference_common.py's.

Sub-commands
  make       write a random model (Myelin's Llama model file, fp32) and a shard
  train      run N optimizer steps; write the per-step losses and the final model
  gradcheck  compare the hand-written backward with central differences
  compare    check Myelin's --metrics-out losses and saved model against the
             reference's (exit 0 = agree, 1 = disagree)

Mathematics (x of shape B,T,C; D = C/NH; I the intermediate size):
  RMS(x; w)  = x / sqrt(mean(x^2) + eps) * w
  x0 = wte[tokens]
  per layer:
    qkv = RMS(x; ln1w) @ qkvw^T        q = [0, NH D), k = [NH D, (NH+NKV) D), v = the rest
    q, k rotated per head (rotate-half): for i < D/2, angle = t * inv_freq[i],
      out[i] = x[i] cos - x[i+D/2] sin,  out[i+D/2] = x[i+D/2] cos + x[i] sin
      inv_freq[i] = theta^(-2i/D), Llama 3 scaled (see inv_freq below)
    y  = softmax(q k^T / sqrt(D), causal) v, query head h reading kv head h // (NH/NKV)
    x  = x + y @ attprojw^T
    g | u = RMS(x; ln2w) @ fcw^T       gate rows [0, I), up rows [I, 2I)
    x  = x + (silu(g) * u) @ fcprojw^T
  logits = RMS(x; lnfw) @ head^T       head = lm_head (untied) or wte; Vp columns,
                                       softmax over the first V only
  loss = mean over B*T of -log p[target]
Myelin's Llama model file (runtime/io/model_file.h): 256 int32 header words
[magic 20261201, version 3, maxT, V, L, NH, C, Vp, NKV, I, tied, llama3,
norm eps as float bits, theta, factor, low, high, original max position as
doubles in two words each, zeros], then wte [Vp,C], ln1w [L,C],
qkvw [L,(NH+2NKV)D,C], attprojw [L,C,C], ln2w [L,C], fcw [L,2I,C],
fcprojw [L,C,I], lnfw [C], lm_head [Vp,C] (untied only), fp32.
"""
import argparse
import math
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_numpy import linear_bwd  # noqa: E402
from reference_common import (add_commands, compare_losses, cross_entropy, gradcheck,  # noqa: E402
                              save_run, train, verdict, write_shard)

MAGIC = 20261201
DOUBLES = ("theta", "factor", "low", "high", "orig")


def names(cfg):
    base = ["wte", "ln1w", "qkvw", "attprojw", "ln2w", "fcw", "fcprojw", "lnfw"]
    return base if cfg["tied"] else base + ["lm_head"]


def shapes(cfg):
    L, C, Vp, I = cfg["L"], cfg["C"], cfg["Vp"], cfg["I"]
    Q = (cfg["NH"] + 2 * cfg["NKV"]) * (C // cfg["NH"])
    return {"wte": (Vp, C), "ln1w": (L, C), "qkvw": (L, Q, C), "attprojw": (L, C, C),
            "ln2w": (L, C), "fcw": (L, 2 * I, C), "fcprojw": (L, C, I), "lnfw": (C,),
            "lm_head": (Vp, C)}


# ---- files ------------------------------------------------------------------

def read_model(path):
    with open(path, "rb") as f:
        h = np.frombuffer(f.read(256 * 4), dtype="<i4")
        raw = np.frombuffer(f.read(), dtype="<f4")
    if h[0] != MAGIC or h[1] != 3:
        sys.exit(f"{path}: magic {h[0]} version {h[1]}; expected {MAGIC} version 3 (fp32)")
    cfg = dict(zip(("maxT", "V", "L", "NH", "C", "Vp", "NKV", "I", "tied", "llama3"),
                   (int(x) for x in h[2:12])))
    cfg["eps"] = float(np.frombuffer(h[12:13].tobytes(), dtype="<f4")[0])
    for i, k in enumerate(DOUBLES):
        cfg[k] = float(np.frombuffer(h[13 + 2 * i:15 + 2 * i].tobytes(), dtype="<f8")[0])
    sh = shapes(cfg)
    total = sum(int(np.prod(sh[n])) for n in names(cfg))
    if raw.size != total:
        sys.exit(f"{path}: {raw.size} parameters after the header, expected {total}")
    P, off = {}, 0
    for n in names(cfg):
        k = int(np.prod(sh[n]))
        P[n] = raw[off:off + k].astype(np.float64).reshape(sh[n])
        off += k
    return cfg, P


def write_model(path, cfg, P):
    words = [MAGIC, 3] + [cfg[k] for k in ("maxT", "V", "L", "NH", "C", "Vp", "NKV", "I",
                                           "tied", "llama3")]
    words.append(struct.unpack("<i", struct.pack("<f", cfg["eps"]))[0])
    for k in DOUBLES:
        words += list(struct.unpack("<2i", struct.pack("<d", cfg[k])))
    words += [0] * (256 - len(words))
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *words))
        for n in names(cfg):
            f.write(np.ascontiguousarray(P[n], dtype="<f4").tobytes())


# ---- layers -----------------------------------------------------------------

def inv_freq(cfg):
    D = cfg["C"] // cfg["NH"]
    f = cfg["theta"] ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    if not cfg["llama3"]:
        return f
    # Llama 3: long wavelengths are divided by factor, short ones kept, the
    # band between original/high .. original/low interpolated.
    wavelen = 2 * math.pi / f
    lo_wl, hi_wl = cfg["orig"] / cfg["low"], cfg["orig"] / cfg["high"]
    smooth = (cfg["orig"] / wavelen - cfg["low"]) / (cfg["high"] - cfg["low"])
    band = (1 - smooth) * f / cfg["factor"] + smooth * f
    return np.where(wavelen < hi_wl, f, np.where(wavelen > lo_wl, f / cfg["factor"], band))


def rope(x, cos, sin, inverse=False):
    """x: B,H,T,D. Rotates by +angle (or -angle: the backward)."""
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    s = -sin if inverse else sin
    return np.concatenate([a * cos - b * s, b * cos + a * s], axis=-1)


def rms_fwd(x, w, eps):
    r = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    return x * r * w, (x, r)


def rms_bwd(dy, cache, w):
    x, r = cache
    dxn = dy * w
    C = x.shape[-1]
    dx = r * dxn - x * r ** 3 * (dxn * x).sum(axis=-1, keepdims=True) / C
    dw = (dy * x * r).reshape(-1, C).sum(axis=0)
    return dx, dw


def attention_fwd(qkv, cfg, cos, sin):
    B, T, _ = qkv.shape
    NH, NKV = cfg["NH"], cfg["NKV"]
    D = cfg["C"] // NH
    heads = lambda lo, n: qkv[..., lo * D:(lo + n) * D].reshape(B, T, n, D).transpose(0, 2, 1, 3)
    q, k, v = heads(0, NH), heads(NH, NKV), heads(NH + NKV, NKV)
    qr, kr = rope(q, cos, sin), rope(k, cos, sin)
    g = NH // NKV
    ke, ve = np.repeat(kr, g, axis=1), np.repeat(v, g, axis=1)   # head h reads kv head h // g
    scale = 1.0 / math.sqrt(D)
    s = (qr @ ke.transpose(0, 1, 3, 2)) * scale
    s = np.where(np.triu(np.ones((T, T), dtype=bool), k=1), -np.inf, s)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    y = (p @ ve).transpose(0, 2, 1, 3).reshape(B, T, NH * D)
    return y, (qr, ke, ve, p, scale, g)


def attention_bwd(dy, cache, cos, sin):
    qr, ke, ve, p, scale, g = cache
    B, NH, T, D = qr.shape
    dyh = dy.reshape(B, T, NH, D).transpose(0, 2, 1, 3)
    dp = dyh @ ve.transpose(0, 1, 3, 2)
    dve = p.transpose(0, 1, 3, 2) @ dyh
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dqr = (ds @ ke) * scale
    dke = (ds.transpose(0, 1, 3, 2) @ qr) * scale
    fold = lambda t: t.reshape(B, NH // g, g, T, D).sum(axis=2)   # sum over a kv head's group
    dq = rope(dqr, cos, sin, inverse=True)
    dk = rope(fold(dke), cos, sin, inverse=True)
    dv = fold(dve)
    back = lambda t: t.transpose(0, 2, 1, 3).reshape(B, T, -1)
    return np.concatenate([back(dq), back(dk), back(dv)], axis=-1)


def silu(x):
    return x / (1.0 + np.exp(-x))


# ---- model ------------------------------------------------------------------

def forward_backward(cfg, P, inputs, targets, grad_scale):
    """Loss of one micro-batch and the gradients of grad_scale * loss."""
    V, L, I, eps = cfg["V"], cfg["L"], cfg["I"], cfg["eps"]
    B, T = inputs.shape
    ang = np.arange(T, dtype=np.float64)[:, None] * inv_freq(cfg)[None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    head = P["wte"] if cfg["tied"] else P["lm_head"]
    x = P["wte"][inputs]
    caches = []
    for l in range(L):
        a, c1 = rms_fwd(x, P["ln1w"][l], eps)
        qkv = a @ P["qkvw"][l].T
        y, ca = attention_fwd(qkv, cfg, cos, sin)
        x2 = x + y @ P["attprojw"][l].T
        b, c2 = rms_fwd(x2, P["ln2w"][l], eps)
        gu = b @ P["fcw"][l].T
        gate, up = gu[..., :I], gu[..., I:]
        hdn = silu(gate) * up
        x = x2 + hdn @ P["fcprojw"][l].T
        caches.append((a, c1, y, ca, b, c2, gate, up, hdn))
    lnf, cf = rms_fwd(x, P["lnfw"], eps)
    logits = lnf @ head.T
    loss, dlogits = cross_entropy(logits, targets, V, grad_scale)

    G = {n: np.zeros_like(P[n]) for n in names(cfg)}
    G["wte" if cfg["tied"] else "lm_head"] += (dlogits.reshape(-1, dlogits.shape[-1]).T
                                               @ lnf.reshape(-1, lnf.shape[-1]))
    dx, G["lnfw"] = rms_bwd(dlogits @ head, cf, P["lnfw"])
    for l in reversed(range(L)):
        a, c1, y, ca, b, c2, gate, up, hdn = caches[l]
        dhdn, G["fcprojw"][l], _ = linear_bwd(dx, hdn, P["fcprojw"][l])
        sg = 1.0 / (1.0 + np.exp(-gate))
        dgate = dhdn * up * sg * (1.0 + gate * (1.0 - sg))
        dup = dhdn * silu(gate)
        db, G["fcw"][l], _ = linear_bwd(np.concatenate([dgate, dup], axis=-1), b, P["fcw"][l])
        d2, G["ln2w"][l] = rms_bwd(db, c2, P["ln2w"][l])
        dx = dx + d2
        dy, G["attprojw"][l], _ = linear_bwd(dx, y, P["attprojw"][l])
        dqkv = attention_bwd(dy, ca, cos, sin)
        da, G["qkvw"][l], _ = linear_bwd(dqkv, a, P["qkvw"][l])
        d1, G["ln1w"][l] = rms_bwd(da, c1, P["ln1w"][l])
        dx = dx + d1
    np.add.at(G["wte"], inputs.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    return loss, G


# ---- commands ---------------------------------------------------------------

def cmd_make(a):
    rng = np.random.default_rng(a.seed)
    cfg = dict(maxT=a.maxT, V=a.V, L=a.L, NH=a.NH, C=a.C, Vp=a.Vp, NKV=a.NKV, I=a.I,
               tied=0, llama3=1, eps=float(np.float32(1e-5)), theta=a.theta, factor=a.factor,
               low=1.0, high=4.0, orig=a.orig)
    sh = shapes(cfg)
    P = {}
    for n in names(cfg):
        P[n] = (1.0 + 0.1 * rng.standard_normal(sh[n]) if n in ("ln1w", "ln2w", "lnfw")
                else a.std * rng.standard_normal(sh[n]))
    # Padding rows of wte and lm_head are random too: they must never reach
    # the softmax, get no gradient and stay unchanged.
    write_model(a.model, cfg, P)
    write_shard(a.shard, rng.integers(0, a.V, size=a.ntok))
    wl = 2 * math.pi / (cfg["theta"] ** (-np.arange(0, a.C // a.NH, 2) / (a.C // a.NH)))
    print("rope wavelengths", np.round(wl, 2), "kept below", a.orig / 4.0,
          "scaled above", a.orig, "(llama3)")


def cmd_train(a):
    cfg, P = read_model(a.model)
    losses = train(cfg, P, names(cfg), forward_backward, a, verbose=not a.quiet)
    save_run(a, losses, write_model, cfg, P)


def cmd_gradcheck(a):
    cfg, P = read_model(a.model)
    return gradcheck(cfg, P, names(cfg), forward_backward, a)


def cmd_compare(a):
    ok = compare_losses(a)
    if ok is None:
        return 1
    cfg_m, Pm = read_model(a.model)
    cfg_r, _ = read_model(a.ref_model)
    if cfg_m != cfg_r:
        print(f"FAIL: saved config {cfg_m} differs from the reference's {cfg_r}")
        return 1
    Pr = dict(np.load(a.ref_model + ".f64.npz"))
    scale = max(np.abs(Pr[n]).max() for n in Pr)
    worst = max(np.abs(Pr[n] - Pm[n]).max() / scale for n in Pr)
    print(f"max parameter difference / max |param|: {worst:.3e} (tolerance {a.param_rtol:g})")
    _, Pi = read_model(a.init)
    V = cfg_m["V"]
    for n in ("wte", "lm_head"):
        if n in Pm and not np.array_equal(Pi[n][V:], Pm[n][V:]):
            ok = False
            print(f"FAIL: padding rows of {n} changed")
    return verdict(ok, worst, a)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--model", required=True)
    m.add_argument("--shard", required=True)
    for k, v in (("V", 67), ("Vp", 80), ("L", 2), ("NH", 4), ("NKV", 2), ("C", 32), ("I", 40),
                 ("maxT", 16), ("ntok", 88), ("seed", 0)):
        m.add_argument("--" + k, type=int, default=v)
    for k, v in (("theta", 10000.0), ("factor", 4.0), ("orig", 64.0), ("std", 0.2)):
        m.add_argument("--" + k, type=float, default=v)
    add_commands(sub, batch_size=2, seq_len=8, lr=1e-3, models_required=True)
    a = ap.parse_args()
    sys.exit({"make": cmd_make, "train": cmd_train, "gradcheck": cmd_gradcheck,
              "compare": cmd_compare}[a.cmd](a) or 0)


if __name__ == "__main__":
    main()
