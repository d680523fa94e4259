"""Compares two myelin runs: per-step losses (--metrics-out JSON lines) to a
relative tolerance, and optionally two saved models (llm.c fp32 files, or F32
safetensors) to a tolerance relative to the largest parameter. Exit 1 with a
message on mismatch."""
import json
import struct
import sys


def losses(path):
    with open(path) as f:
        return [json.loads(line)["loss"] for line in f if line.strip()]


def safetensors_params(path):
    """(tensor names and shapes, every F32 value in name order)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    shapes, values = [], []
    for name in sorted(header):
        t = header[name]
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: {name}: only F32 tensors are compared")
        begin, end = t["data_offsets"]
        shapes.append((name, tuple(t["shape"])))
        values.extend(struct.unpack("<%df" % ((end - begin) // 4), data[begin:end]))
    return shapes, values


def params(path):
    if path.endswith(".safetensors"):
        return safetensors_params(path)
    with open(path, "rb") as f:
        header = struct.unpack("<256i", f.read(1024))
        raw = f.read()
    if header[1] == 3:
        return header[:8], struct.unpack("<%df" % (len(raw) // 4), raw)
    raise SystemExit(f"{path}: only fp32 (version 3) files are compared")


def main():
    a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    la, lb = losses(a), losses(b)
    if len(la) != len(lb) or not la:
        raise SystemExit(f"FAIL: {a} has {len(la)} steps, {b} has {len(lb)}")
    worst = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(la, lb))
    print(f"{b}: {len(lb)} steps, max relative loss difference {worst:.2e} (tolerance {tol:g})")
    if worst > tol:
        for i, (x, y) in enumerate(zip(la, lb)):
            print(f"  step {i + 1}: {x!r} vs {y!r}")
        raise SystemExit("FAIL: losses differ")
    if len(sys.argv) > 5:
        ha, pa = params(sys.argv[4])
        hb, pb = params(sys.argv[5])
        if ha != hb or len(pa) != len(pb):
            raise SystemExit("FAIL: model headers differ")
        scale = max(abs(x) for x in pa)
        diff = max(abs(x - y) for x, y in zip(pa, pb))
        print(f"  saved models: max |diff| {diff:.2e}, max |param| {scale:.2e}")
        if diff > tol * scale:
            raise SystemExit("FAIL: saved models differ beyond float rounding")


main()
