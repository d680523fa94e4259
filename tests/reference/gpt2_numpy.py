#!/usr/bin/python3
"""Independent float64 NumPy reference for GPT-2 training as llm.c's train_gpt2.c
defines it (fp32 there, float64 here): forward, a hand-written backward and
llm.c's CPU AdamW. Myelin's exactness test runs both on the same files.

Sub-commands
  make     write a random llm.c model file (v3, fp32) and a random token shard
  train    run N optimizer steps from a model file over a shard, read sequentially
           like llm.c; print and write the per-step losses; save the final model
  gradcheck  compare the hand-written backward with central differences
  compare  check Myelin's --metrics-out losses and saved model against the
           reference's (exit 0 = agree, 1 = disagree)

Mathematics (per layer l, x of shape B,T,C):
  x0 = wte[tokens] + wpe[:T]
  a  = LN(x; ln1w, ln1b)                 LN: (x-mean)/sqrt(var+1e-5)*w + b, var biased
  qkv = a @ qkvw^T + qkvb                q = [0,C), k = [C,2C), v = [2C,3C); head h = cols h*hs..
  y  = softmax(q k^T / sqrt(hs), causal) v   per head
  x  = x + y @ attprojw^T + attprojb
  h  = GeLU_tanh(LN(x; ln2w, ln2b) @ fcw^T + fcb)
  x  = x + h @ fcprojw^T + fcprojb
  logits = LN(x; lnfw, lnfb) @ wte^T     Vp columns; softmax over the first V only
  loss = mean over B*T of -log p[target]
Gradient accumulation over K micro-batches: the step loss is the mean of the K
micro-batch losses and the gradient is the mean of their gradients.
AdamW (t = step + 1):
  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  mhat = m/(1-b1^t);  vhat = v/(1-b2^t)
  p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_common import (add_commands, compare_losses, cross_entropy, gradcheck,  # noqa: E402
                              save_run, train, verdict, write_shard)

MODEL_MAGIC = 20240326
LN_EPS = 1e-5
GELU_K = math.sqrt(2.0 / math.pi)

PARAM_NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]


def param_shapes(maxT, V, L, NH, C, Vp):
    return {
        "wte": (Vp, C), "wpe": (maxT, C),
        "ln1w": (L, C), "ln1b": (L, C),
        "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
        "attprojw": (L, C, C), "attprojb": (L, C),
        "ln2w": (L, C), "ln2b": (L, C),
        "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
        "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
        "lnfw": (C,), "lnfb": (C,),
    }


# ---- files ------------------------------------------------------------------

def read_model(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype="<i4")
        if header[0] != MODEL_MAGIC:
            sys.exit(f"{path}: bad magic {header[0]} (expected {MODEL_MAGIC})")
        if header[1] != 3:
            sys.exit(f"{path}: version {header[1]}; the reference reads version 3 (fp32)")
        maxT, V, L, NH, C, Vp = (int(x) for x in header[2:8])
        raw = np.frombuffer(f.read(), dtype="<f4")
    shapes = param_shapes(maxT, V, L, NH, C, Vp)
    total = sum(int(np.prod(s)) for s in shapes.values())
    if raw.size != total:
        sys.exit(f"{path}: {raw.size} parameters after the header, expected {total}")
    params, off = {}, 0
    for name in PARAM_NAMES:
        n = int(np.prod(shapes[name]))
        params[name] = raw[off:off + n].astype(np.float64).reshape(shapes[name])
        off += n
    return dict(maxT=maxT, V=V, L=L, NH=NH, C=C, Vp=Vp), params


def write_model(path, cfg, params):
    header = np.zeros(256, dtype="<i4")
    header[:8] = [MODEL_MAGIC, 3, cfg["maxT"], cfg["V"], cfg["L"], cfg["NH"], cfg["C"], cfg["Vp"]]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for name in PARAM_NAMES:
            f.write(np.ascontiguousarray(params[name], dtype="<f4").tobytes())


# ---- layers -----------------------------------------------------------------

def layernorm_fwd(x, w, b):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + LN_EPS)
    xhat = (x - mean) * rstd
    return xhat * w + b, (xhat, rstd)


def layernorm_bwd(dout, cache, w):
    xhat, rstd = cache
    dw = (dout * xhat).reshape(-1, xhat.shape[-1]).sum(axis=0)
    db = dout.reshape(-1, xhat.shape[-1]).sum(axis=0)
    dxhat = dout * w
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dw, db


def gelu_fwd(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_K * (x + 0.044715 * x ** 3)))


def gelu_bwd(dout, x):
    t = np.tanh(GELU_K * (x + 0.044715 * x ** 3))
    dudx = GELU_K * (1.0 + 3.0 * 0.044715 * x ** 2)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dudx)


def linear_fwd(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def linear_bwd(dout, x, w):
    """y = x @ w^T + b. Returns dx, dw, db (sums over all leading dims)."""
    d2 = dout.reshape(-1, dout.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    return dout @ w, d2.T @ x2, d2.sum(axis=0)


def attention_fwd(qkv, NH):
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
               for i in range(3))
    scale = 1.0 / math.sqrt(hs)
    s = (q @ k.transpose(0, 1, 3, 2)) * scale
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    s = np.where(mask, -np.inf, s)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    y = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return y, (q, k, v, p, scale)


def attention_bwd(dy, cache):
    q, k, v, p, scale = cache
    B, NH, T, hs = q.shape
    dyh = dy.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    dp = dyh @ v.transpose(0, 1, 3, 2)
    dv = p.transpose(0, 1, 3, 2) @ dyh
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))   # masked entries have p = 0
    dq = (ds @ k) * scale
    dk = (ds.transpose(0, 1, 3, 2) @ q) * scale
    back = lambda t: t.transpose(0, 2, 1, 3).reshape(B, T, NH * hs)
    return np.concatenate([back(dq), back(dk), back(dv)], axis=-1)


# ---- model ------------------------------------------------------------------

def forward_backward(cfg, P, inputs, targets, grad_scale):
    """Loss of one micro-batch and the gradients of grad_scale * loss."""
    V, L, NH = cfg["V"], cfg["L"], cfg["NH"]
    B, T = inputs.shape
    x = P["wte"][inputs] + P["wpe"][:T]
    caches = []
    for l in range(L):
        ln1, c_ln1 = layernorm_fwd(x, P["ln1w"][l], P["ln1b"][l])
        qkv = linear_fwd(ln1, P["qkvw"][l], P["qkvb"][l])
        atty, c_att = attention_fwd(qkv, NH)
        x2 = x + linear_fwd(atty, P["attprojw"][l], P["attprojb"][l])
        ln2, c_ln2 = layernorm_fwd(x2, P["ln2w"][l], P["ln2b"][l])
        fch = linear_fwd(ln2, P["fcw"][l], P["fcb"][l])
        fcg = gelu_fwd(fch)
        x3 = x2 + linear_fwd(fcg, P["fcprojw"][l], P["fcprojb"][l])
        caches.append((ln1, c_ln1, atty, c_att, ln2, c_ln2, fch, fcg))
        x = x3
    lnf, c_lnf = layernorm_fwd(x, P["lnfw"], P["lnfb"])
    logits = lnf @ P["wte"].T                      # B,T,Vp
    loss, dlogits = cross_entropy(logits, targets, V, grad_scale)

    G = {name: np.zeros_like(P[name]) for name in PARAM_NAMES}
    G["wte"] += dlogits.reshape(-1, dlogits.shape[-1]).T @ lnf.reshape(-1, lnf.shape[-1])
    dlnf = dlogits @ P["wte"]
    dx, G["lnfw"], G["lnfb"] = layernorm_bwd(dlnf, c_lnf, P["lnfw"])
    for l in reversed(range(L)):
        ln1, c_ln1, atty, c_att, ln2, c_ln2, fch, fcg = caches[l]
        # x3 = x2 + fcproj(gelu(fc(ln2(x2))))
        dfcg, G["fcprojw"][l], G["fcprojb"][l] = linear_bwd(dx, fcg, P["fcprojw"][l])
        dfch = gelu_bwd(dfcg, fch)
        dln2, G["fcw"][l], G["fcb"][l] = linear_bwd(dfch, ln2, P["fcw"][l])
        dx2, G["ln2w"][l], G["ln2b"][l] = layernorm_bwd(dln2, c_ln2, P["ln2w"][l])
        dx = dx + dx2
        # x2 = x + attproj(attention(qkv(ln1(x))))
        datty, G["attprojw"][l], G["attprojb"][l] = linear_bwd(dx, atty, P["attprojw"][l])
        dqkv = attention_bwd(datty, c_att)
        dln1, G["qkvw"][l], G["qkvb"][l] = linear_bwd(dqkv, ln1, P["qkvw"][l])
        dx1, G["ln1w"][l], G["ln1b"][l] = layernorm_bwd(dln1, c_ln1, P["ln1w"][l])
        dx = dx + dx1
    np.add.at(G["wte"], inputs.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    G["wpe"][:T] += dx.sum(axis=0)
    return loss, G


def cmd_make(a):
    rng = np.random.default_rng(a.seed)
    cfg = dict(maxT=a.maxT, V=a.V, L=a.L, NH=a.NH, C=a.C, Vp=a.Vp)
    if a.C % a.NH or a.Vp < a.V:
        sys.exit("need C % NH == 0 and Vp >= V")
    shapes = param_shapes(**cfg)
    P = {}
    for name in PARAM_NAMES:
        s = shapes[name]
        if name in ("ln1w", "ln2w", "lnfw"):
            P[name] = 1.0 + 0.1 * rng.standard_normal(s)
        elif name.endswith("b"):
            P[name] = 0.05 * rng.standard_normal(s)
        else:
            # Large enough that attention is far from uniform and GeLU is nonlinear.
            P[name] = a.std * rng.standard_normal(s)
    # The padded rows of wte are random too: they must never reach the softmax,
    # get no gradient and so stay unchanged under AdamW with wd = 0.
    write_model(a.model, cfg, P)
    write_shard(a.shard, rng.integers(0, a.V, size=a.ntok))


def cmd_train(a):
    cfg, P = read_model(a.model)
    losses = train(cfg, P, PARAM_NAMES, forward_backward, a, verbose=not a.quiet)
    save_run(a, losses, write_model, cfg, P)


def cmd_gradcheck(a):
    cfg, P = read_model(a.model)
    return gradcheck(cfg, P, PARAM_NAMES, forward_backward, a)


def cmd_compare(a):
    ok = compare_losses(a)
    if ok is None:
        return 1
    worst = 0.0
    if a.ref_model and a.model:
        cfg_r, _ = read_model(a.ref_model)
        cfg_m, Pm = read_model(a.model)
        if cfg_r != cfg_m:
            print(f"FAIL: saved model shape {cfg_m} differs from the reference's {cfg_r}")
            return 1
        Pr = dict(np.load(a.ref_model + ".f64.npz"))
        C = cfg_r["C"]
        scale = max(np.abs(Pr[n]).max() for n in PARAM_NAMES)
        for name in PARAM_NAMES:
            r, m = Pr[name], Pm[name]
            if name == "qkvb":
                # The key bias's gradient is zero in exact arithmetic (adding a
                # constant vector to every key shifts all of a query's scores
                # equally, which softmax ignores), so both sides feed rounding
                # noise to AdamW, whose update mhat/sqrt(vhat) normalises noise to
                # O(1): the key bias legitimately drifts by up to lr per step in
                # either direction. Compare query and value biases only, and
                # report the key bias's drift.
                kb = np.abs(r[:, C:2 * C] - m[:, C:2 * C]).max() / scale
                print(f"  {name:9s} key bias (zero-gradient, excluded): {kb:.2e}")
                r = np.concatenate([r[:, :C], r[:, 2 * C:]], axis=1)
                m = np.concatenate([m[:, :C], m[:, 2 * C:]], axis=1)
            d = np.abs(r - m).max() / scale
            worst = max(worst, d)
            print(f"  {name:9s} max |diff| / max |param| = {d:.2e}")
        if a.init:
            # Parameters that get no gradient must come back bit for bit: the
            # padded vocabulary rows of wte and the position rows past seq-len.
            cfg_i, Pi = read_model(a.init)
            V, T = cfg_i["V"], a.seq_len
            for name, sl in (("wte", np.s_[V:]), ("wpe", np.s_[T:] if T else np.s_[0:0])):
                if not np.array_equal(Pi[name][sl], Pm[name][sl]):
                    ok = False
                    print(f"FAIL: {name} rows without gradient changed "
                          f"(max |diff| {np.abs(Pi[name][sl] - Pm[name][sl]).max():.3e})")
                else:
                    print(f"  {name:9s} rows without gradient unchanged: ok")
        print(f"max parameter difference (relative to max |param| = {scale:.4f}): {worst:.3e} "
              f"(tolerance {a.param_rtol:g})")
    return verdict(ok, worst, a)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("make", help="write a random model file and token shard")
    m.add_argument("--model", required=True)
    m.add_argument("--shard", required=True)
    m.add_argument("--V", type=int, default=67)
    m.add_argument("--Vp", type=int, default=80)
    m.add_argument("--L", type=int, default=2)
    m.add_argument("--NH", type=int, default=2)
    m.add_argument("--C", type=int, default=16)
    m.add_argument("--maxT", type=int, default=16)
    m.add_argument("--ntok", type=int, default=88)
    m.add_argument("--std", type=float, default=0.2)
    m.add_argument("--seed", type=int, default=0)

    _, _, c = add_commands(sub, batch_size=4, seq_len=64, lr=3e-4, models_required=False)
    c.add_argument("--seq-len", type=int, default=0, help="with --init: wpe rows >= this are checked")

    a = ap.parse_args()
    if a.cmd == "make":
        cmd_make(a)
    elif a.cmd == "train":
        cmd_train(a)
    elif a.cmd == "gradcheck":
        sys.exit(cmd_gradcheck(a))
    else:
        sys.exit(cmd_compare(a))


if __name__ == "__main__":
    main()
