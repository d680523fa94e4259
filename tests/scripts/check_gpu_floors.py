#!/usr/bin/env python3
"""Checks the markdown of scripts/gpu_floors.py (read from stdin) for internal
consistency: every row's floor is max(bytes / bandwidth, FLOPs / peak) with its
bound named right, step times are calls x floor, the parts and the step add up
the rows, and the predicted step adds up its parts. Independently of the
script, it recomputes from each section's title the GEMM FLOPs (6 x tokens x
matmul weights), the attention FLOPs (4K forward + 14K backward per layer) and
bytes per call (attention_fa2.cu's header), the number of norm backward calls
(2L + 1) and the bias-gradient add kernels (GPT-2: 4 per layer, 3*OC floats
each); it checks that GPT-2's GeLU runs in the GEMM epilogues exactly when
recompute is 0, that attention runs on the tensor cores (head size 64 or 128,
kv heads dividing heads, as cuda_backend.h picks it), and that every predicted
step is at least the floor and differs between its two attention scenarios only
in the attention. Exit 1 with a message on the first failure."""

import re
import sys


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def close(a, b, tol, what):
    if abs(a - b) > tol:
        fail(f"{what}: {a} != {b} (tolerance {tol})")


def tables(lines):
    """Yields (index of the header line, header cells, rows of cells)."""
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            head = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append([c.strip() for c in lines[j].strip().strip("|").split("|")])
                j += 1
            yield i, head, rows
            i = j
        else:
            i += 1


def main():
    text = sys.stdin.read()
    lines = text.splitlines()
    all_tables = list(tables(lines))
    if not all_tables or all_tables[0][1][0] != "machine":
        fail("no machine table first")
    machines = {}
    for r in all_tables[0][2]:
        machines[r[0]] = (float(r[1]) * 1e12, float(r[2]) * 1e12, float(r[3]) * 1e12)
    if len(machines) < 2:
        fail("expected at least two machines")
    titles = [(i, l) for i, l in enumerate(lines) if l.startswith("### ")]
    if not titles:
        fail("no model section")
    sections = 0
    for k, (start, title) in enumerate(titles):
        end = titles[k + 1][0] if k + 1 < len(titles) else len(lines)
        check_section(title, [t for t in all_tables if start < t[0] < end], machines)
        sections += 1
    print(f"gpu_floors: {sections} section(s) consistent")


def check_section(title, tabs, machines):
    m = re.search(r"(GPT-2|llama) L=(\d+) C=(\d+) NH=(\d+) NKV=(\d+) D=(\d+) I=(\d+) V=(\d+) "
                  r"Vp=(\d+), B=(\d+), T=(\d+), recompute (\d)", title)
    if not m:
        fail(f"cannot read the shape of: {title}")
    fam = m.group(1)
    L, C, NH, NKV, D, I, V, Vp, B, T, recompute = (int(x) for x in m.groups()[1:])
    if len(tabs) != 3:
        fail(f"{title}: expected 3 tables (kernels, parts, prediction), got {len(tabs)}")
    (_, head, rows), (_, phead, prows), (_, qhead, qrows) = tabs
    col = {h: i for i, h in enumerate(head)}
    names = list(machines)
    sums = {n: {} for n in names}
    tflop, gb = {}, {}
    norm_bwd_calls = 0
    dbias_calls, dbias_gb = 0, 0.0
    attn_rows = []
    kernel_names = []
    for r in rows:
        name, part, calls = r[col["kernel"]], r[col["part"]], int(r[col["calls"]])
        kernel_names.append(name)
        mb, gfl, unit = float(r[col["MB/call"]]), float(r[col["GFLOP/call"]]), r[col["unit"]]
        if unit not in ("tensor", "fp32"):
            fail(f"{name}: unknown unit {unit}")
        if name.startswith(("layernorm_backward", "rmsnorm_backward")):
            norm_bwd_calls += calls
        if name.endswith("dbias add"):
            dbias_calls += calls
            dbias_gb += calls * mb / 1e3
        if part == "attention":
            attn_rows.append((name, calls, mb, unit))
        tflop[part] = tflop.get(part, 0.0) + calls * gfl / 1e3
        gb[part] = gb.get(part, 0.0) + calls * mb / 1e3
        for n in names:
            bw, tc, fp32 = machines[n]
            peak = tc if unit == "tensor" else fp32
            t_mem, t_fl = mb * 1e6 / bw, gfl * 1e9 / peak
            want = max(t_mem, t_fl) * 1e6
            i = col[f"{n} floor us/call"]
            got = float(r[i])
            # printed: us to 0.01, MB and GFLOP to 0.001
            tol = 0.0051 + (0.0005e6 / bw if want == t_mem * 1e6 else 0.0005e9 / peak) * 1e6
            close(got, want, tol, f"{title} {name} {n} floor")
            bound = r[i + 1]
            if abs(t_mem - t_fl) > 1e-3 * max(t_mem, t_fl):
                if bound != ("FLOPs" if t_fl > t_mem else "bytes"):
                    fail(f"{name} {n}: bound {bound} is wrong")
            step = float(r[col[f"{n} step ms"]])
            close(step, calls * got / 1e3, calls * 0.005e-3 + 0.0006, f"{name} {n} step ms")
            sums[n][part] = sums[n].get(part, 0.0) + calls * want / 1e3
    # parts table
    pcol = {h: i for i, h in enumerate(phead)}
    seen = set()
    for r in prows:
        part = r[0].split()[0].rstrip(":")
        tol_n = len(rows) * 0.001 + 0.002
        if part == "step":
            close(float(r[pcol["TFLOP"]]), sum(tflop.values()), tol_n, "step TFLOP")
            close(float(r[pcol["GB"]]), sum(gb.values()), tol_n, "step GB")
            for n in names:
                close(float(r[pcol[f"{n} floor ms"]]), sum(sums[n].values()), tol_n,
                      f"{n} step floor")
            continue
        seen.add(part)
        close(float(r[pcol["TFLOP"]]), tflop.get(part, 0.0), tol_n, f"{part} TFLOP")
        close(float(r[pcol["GB"]]), gb.get(part, 0.0), tol_n, f"{part} GB")
        for n in names:
            close(float(r[pcol[f"{n} floor ms"]]), sums[n].get(part, 0.0), tol_n,
                  f"{part} {n} floor")
    if seen != set(tflop):
        fail(f"parts table lists {sorted(seen)}, rows have {sorted(tflop)}")
    # independent counts from the title's shape
    N = B * T
    Q = (NH + 2 * NKV) * D
    F = 2 * I if fam == "llama" else I
    mm_weights = L * (Q * C + NH * D * C + F * C + I * C) + Vp * C
    close(tflop["gemm"], 6 * N * mm_weights / 1e12, len(rows) * 0.001, "GEMM TFLOP = 6 N W")
    K = B * NH * D * T * (T + 1) / 2
    close(tflop["attention"], L * 18 * K / 1e12, 0.002, "attention TFLOP = 18 K L")
    # attention_fa2.cu (cuda_backend.h: bf16, D 64 or 128, NKV dividing NH): forward
    # reads qkv, writes out and lse; backward reads qkv, out, dout, lse, writes dqkv
    # and Drow, reads Drow again.
    if not (D in (64, 128) and NH % NKV == 0):
        fail(f"{title}: shape outside the tensor-core attention")
    lse = 4 * N * NH
    want_mb = {"forward": (2 * N * Q + 2 * N * NH * D + lse) / 1e6,
               "backward": (4 * N * Q + 4 * N * NH * D + 3 * lse) / 1e6}
    if len(attn_rows) != 2:
        fail(f"{title}: expected a forward and a backward attention row, got {attn_rows}")
    for (name, calls, mb, unit), kind in zip(attn_rows, ("forward", "backward")):
        if kind not in name or "_tc" not in name or unit != "tensor" or calls != L:
            fail(f"{title}: {name} ({unit}, {calls} calls) is not the tensor-core {kind}")
        close(mb, want_mb[kind], 0.0011, f"{name} MB/call")
    if norm_bwd_calls != 2 * L + 1:
        fail(f"{norm_bwd_calls} norm backward calls, expected 2L + 1 = {2 * L + 1}")
    joined = " ".join(kernel_names)
    fused = fam != "llama" and recompute == 0
    if fam == "llama":
        want = ["rope_forward", "rope_backward", "swiglu_forward", "swiglu_backward",
                "rmsnorm_forward"]
        unwanted = ["gelu", "GELU", "layernorm", "BGRADB", "dbias"]
    else:
        want = ["layernorm_forward", "BGRADB epilogue"] + (
            ["fc + GELU_AUX_BIAS epilogue", "fcproj dinp + DGELU epilogue"] if fused else
            ["gelu_forward", "gelu_backward"])
        unwanted = ["rope", "rmsnorm", "swiglu"] + (
            ["gelu_forward", "gelu_backward"] if fused else ["GELU_AUX", "DGELU"])
    for k in want:
        if k not in joined:
            fail(f"{title}: no {k} row")
    for k in unwanted:
        if k in joined:
            fail(f"{title}: a {k} row does not belong here")
    # Bias gradients (GPT-2): BGRADB into scratch, one add kernel per bias of
    # qkv, attproj, fc, fcproj; each reads scratch and dbias, writes dbias.
    want_calls = 0 if fam == "llama" else 4 * L
    if dbias_calls != want_calls:
        fail(f"{title}: {dbias_calls} dbias add calls, expected {want_calls}")
    close(dbias_gb, 0 if fam == "llama" else 12 * L * (Q + C + F + C) / 1e9,
          dbias_calls * 0.0005e-3 + 1e-9, "dbias add GB")  # MB printed to 0.001
    # prediction table
    qcol = {h: i for i, h in enumerate(qhead)}
    parts = ["GEMMs ms", "attention ms", "memory-bound ms", "launch gaps ms", "host ms"]
    if len(qrows) != 2 * len(names):
        fail(f"prediction table has {len(qrows)} rows")
    for n in names:
        mine = [r for r in qrows if r[0] == n]
        pess = [r for r in mine if "pessimistic" in r[1]]
        if len(mine) != 2 or len(pess) != 1:
            fail(f"{n}: expected two attention scenarios, one of them pessimistic")
        base = [r for r in mine if r is not pess[0]][0]
        for p in parts:
            if p != "attention ms" and base[qcol[p]] != pess[0][qcol[p]]:
                fail(f"{n}: the scenarios differ in {p}")
        if float(pess[0][qcol["attention ms"]]) < float(base[qcol["attention ms"]]):
            fail(f"{n}: the pessimistic attention is not slower")
    for r in qrows:
        step = float(r[qcol["step ms"]])
        close(step, sum(float(r[qcol[p]]) for p in parts), 0.3, f"{r[0]} {r[1]} predicted step")
        tok = float(r[qcol["tok/s"]].rstrip("k")) * 1e3
        lo, hi = N / ((step + 0.05) * 1e-3), N / (max(step - 0.05, 1e-3) * 1e-3)  # step to 0.1
        if not lo - 500 <= tok <= hi + 500:  # tok/s printed to 1k
            fail(f"{r[0]} {r[1]}: {tok} tok/s, but {N} tokens in {step} ms")
        floor = sum(sums[r[0]].values())
        if step < floor:
            fail(f"{r[0]} {r[1]}: predicted {step} ms beats the floor {floor} ms")


if __name__ == "__main__":
    main()
