"""What the float64 NumPy references (gpt2_numpy.py, llama_numpy.py) share:
llm.c token shards and their sequential loader, AdamW, the training loop,
the finite-difference gradient check and the loss comparison. A model enters
as its config dict, its parameters (name -> float64 array), its parameter
names in file order and its forward_backward(cfg, P, inputs, targets,
grad_scale) -> (loss, gradients)."""
import json
import sys

import numpy as np

SHARD_MAGIC = 20240520


def read_shard(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype="<i4")
        if header[0] != SHARD_MAGIC or header[1] != 1:
            sys.exit(f"{path}: not an llm.c token shard (magic {header[0]}, version {header[1]})")
        ntok = int(header[2])
        toks = np.frombuffer(f.read(), dtype="<u2")
    if toks.size != ntok:
        sys.exit(f"{path}: header says {ntok} tokens, file holds {toks.size}")
    return toks.astype(np.int64)


def write_shard(path, tokens):
    header = np.zeros(256, dtype="<i4")
    header[:3] = [SHARD_MAGIC, 1, len(tokens)]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


class SequentialLoader:
    """llm.c's order: batch k = tokens[k*B*T : k*B*T + B*T + 1]; after
    (ntok-1)//(B*T) batches it starts again from the beginning."""

    def __init__(self, tokens, B, T):
        self.tokens, self.B, self.T = tokens, B, T
        self.nbatches = (len(tokens) - 1) // (B * T)
        if self.nbatches < 1:
            sys.exit(f"shard holds {len(tokens)} tokens, fewer than B*T+1 = {B * T + 1}")
        self.k = 0

    def next(self):
        n = self.B * self.T
        buf = self.tokens[self.k * n: self.k * n + n + 1]
        self.k = (self.k + 1) % self.nbatches
        return buf[:-1].reshape(self.B, self.T), buf[1:].reshape(self.B, self.T)


def adamw(P, G, M, Vm, t, lr, b1, b2, eps, wd, names):
    c1 = 1.0 - b1 ** t
    c2 = 1.0 - b2 ** t
    for name in names:
        g = G[name]
        M[name] = b1 * M[name] + (1.0 - b1) * g
        Vm[name] = b2 * Vm[name] + (1.0 - b2) * g * g
        mhat = M[name] / c1
        vhat = Vm[name] / c2
        P[name] = P[name] - lr * (mhat / (np.sqrt(vhat) + eps) + wd * P[name])


def f32(x):
    """The value a float32 command-line option takes (Myelin parses floats)."""
    return float(np.float32(x))


def cross_entropy(logits, targets, V, grad_scale):
    """The mean over B*T of -log softmax(logits[..., :V])[target] (the padded
    columns past V never enter) and the gradient of grad_scale times it with
    respect to logits (zero in the padded columns)."""
    B, T = targets.shape
    z = logits[..., :V] - logits[..., :V].max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    loss = -np.take_along_axis(logp, targets[..., None], axis=-1).mean()
    dlogits = np.zeros_like(logits)
    dlogits[..., :V] = np.exp(logp)
    np.put_along_axis(dlogits[..., :V], targets[..., None],
                      np.take_along_axis(dlogits[..., :V], targets[..., None], axis=-1) - 1.0,
                      axis=-1)
    dlogits *= grad_scale / (B * T)
    return loss, dlogits


def train(cfg, P, names, forward_backward, a, verbose=False):
    """Runs a.steps AdamW steps of a.grad_accum micro-batches (a.batch_size x
    a.seq_len, read from a.train_data) on P in place; returns the step losses
    (the mean of the micro-batch losses; the gradient is their mean too)."""
    tokens = read_shard(a.train_data)
    if tokens.size and tokens.max() >= cfg["V"]:
        sys.exit(f"{a.train_data}: token {tokens.max()} >= vocab {cfg['V']}")
    if a.seq_len > cfg["maxT"]:
        sys.exit(f"--seq-len {a.seq_len} exceeds the model's maxT {cfg['maxT']}")
    loader = SequentialLoader(tokens, a.batch_size, a.seq_len)
    lr, b1, b2, eps, wd = (f32(x) for x in (a.lr, a.beta1, a.beta2, a.eps, a.weight_decay))
    M = {n: np.zeros_like(P[n]) for n in names}
    Vm = {n: np.zeros_like(P[n]) for n in names}
    losses = []
    for step in range(a.steps):
        G = {n: np.zeros_like(P[n]) for n in names}
        loss = 0.0
        for _ in range(a.grad_accum):
            inp, tgt = loader.next()
            l, g = forward_backward(cfg, P, inp, tgt, 1.0 / a.grad_accum)
            loss += l / a.grad_accum
            for n in names:
                G[n] += g[n]
        adamw(P, G, M, Vm, step + 1, lr, b1, b2, eps, wd, names)
        losses.append(loss)
        if verbose:
            print(f"step {step + 1:4d} loss {loss:.10f}")
    return losses


def save_run(a, losses, write_model, cfg, P):
    """Writes a.losses_out (one JSON object {step, loss} a line) and a.save
    (the model file, plus an unrounded FILE.f64.npz for the comparison), each
    where given."""
    if a.losses_out:
        with open(a.losses_out, "w") as f:
            for i, l in enumerate(losses):
                f.write(json.dumps({"step": i + 1, "loss": l}) + "\n")
    if a.save:
        write_model(a.save, cfg, P)
        np.savez(a.save + ".f64.npz", **P)


def fd_check(P, G, names, loss_of, samples, extra=None, h=1e-5):
    """Worst relative error between G and central differences of loss_of(P)
    over `samples` random entries per tensor (plus extra[name] indices)."""
    rng = np.random.default_rng(1)
    worst = 0.0
    for name in names:
        flat = P[name].reshape(-1)
        idx = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
        if extra and name in extra:
            idx = np.concatenate([idx, extra[name]])
        for i in idx:
            old = flat[i]
            flat[i] = old + h
            lp = loss_of(P)
            flat[i] = old - h
            lm = loss_of(P)
            flat[i] = old
            num = (lp - lm) / (2 * h)
            ana = G[name].reshape(-1)[i]
            # Relative, with a floor: some entries (the key bias) have an exact
            # gradient of zero, where only the absolute error means anything.
            err = abs(num - ana) / max(abs(num) + abs(ana), 1e-4)
            worst = max(worst, err)
    return worst


def gradcheck(cfg, P, names, forward_backward, a):
    """Checks the hand-written backward on the first batch of a.train_data
    against central differences (float64), the wte rows of its first tokens
    included; returns the exit status (0: worst relative error below 1e-5)."""
    inp, tgt = SequentialLoader(read_shard(a.train_data), a.batch_size, a.seq_len).next()
    _, G = forward_backward(cfg, P, inp, tgt, 1.0)
    worst = fd_check(P, G, names, lambda Q: forward_backward(cfg, Q, inp, tgt, 1.0)[0],
                     a.samples, {"wte": inp.reshape(-1)[:4] * cfg["C"]})
    print(f"gradcheck: worst relative error {worst:.2e}")
    return 0 if worst < 1e-5 else 1


def compare_losses(a):
    """Prints the reference's and Myelin's per-step losses side by side;
    returns None when the step counts differ (a failure), else whether the
    largest relative difference is within a.loss_rtol."""
    ref = [json.loads(l)["loss"] for l in open(a.ref_losses) if l.strip()]
    got = [json.loads(l)["loss"] for l in open(a.metrics) if l.strip()]
    if len(ref) != len(got):
        print(f"FAIL: {len(got)} steps in {a.metrics}, reference has {len(ref)}")
        return None
    print(f"{'step':>4} {'reference':>16} {'myelin':>16} {'rel diff':>10}")
    for i, (r, g) in enumerate(zip(ref, got)):
        print(f"{i + 1:4d} {r:16.10f} {g:16.10f} {abs(r - g) / abs(r):10.2e}")
    d = max(abs(r - g) / max(abs(r), 1e-30) for r, g in zip(ref, got))
    print(f"max relative loss difference: {d:.3e} (tolerance {a.loss_rtol:g})")
    if not d <= a.loss_rtol:
        print("FAIL: losses differ")
        return False
    return True


def verdict(ok, worst, a):
    """Prints PASS when ok and the worst relative parameter difference is
    within a.param_rtol, else FAIL; returns the exit status."""
    if not worst <= a.param_rtol:
        ok = False
        print("FAIL: final parameters differ")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def add_commands(sub, batch_size, seq_len, lr, models_required):
    """Adds the train, gradcheck and compare sub-commands (the reference's
    defaults for train's batch size, sequence length and learning rate; with
    models_required, compare needs --ref-model, --model and --init); returns
    the three parsers."""
    t = sub.add_parser("train", help="train from a model file, print per-step losses")
    t.add_argument("--model", required=True)
    t.add_argument("--train-data", required=True)
    for k, v in (("--batch-size", batch_size), ("--seq-len", seq_len), ("--grad-accum", 1),
                 ("--steps", 10)):
        t.add_argument(k, type=int, default=v)
    for k, v in (("--lr", lr), ("--beta1", 0.9), ("--beta2", 0.95), ("--eps", 1e-8),
                 ("--weight-decay", 0.0)):
        t.add_argument(k, type=float, default=v)
    t.add_argument("--losses-out", help="write one JSON object {step, loss} per line")
    t.add_argument("--save", help="write the final model and FILE.f64.npz")
    t.add_argument("--quiet", action="store_true")

    g = sub.add_parser("gradcheck", help="check the backward against finite differences")
    g.add_argument("--model", required=True)
    g.add_argument("--train-data", required=True)
    g.add_argument("--batch-size", type=int, default=2)
    g.add_argument("--seq-len", type=int, default=8)
    g.add_argument("--samples", type=int, default=6, help="entries checked per tensor")

    c = sub.add_parser("compare", help="compare Myelin's run with the reference's")
    c.add_argument("--ref-losses", required=True)
    c.add_argument("--metrics", required=True, help="myelin's --metrics-out file")
    c.add_argument("--ref-model", required=models_required, help="the reference's --save file")
    c.add_argument("--model", required=models_required, help="myelin's --save file")
    c.add_argument("--init", required=models_required,
                   help="the initial model: rows without gradient must not change")
    c.add_argument("--loss-rtol", type=float, default=1e-5)
    c.add_argument("--param-rtol", type=float, default=1e-5)
    return t, g, c
