#!/usr/bin/env python3
"""Draws a roofline plot (PNG) from `myelin bench --output FILE.json`.

Works for both `--device cpu` and `--device cuda` results: the JSON holds the
measured limits (peak_bytes_per_s, peak_flop_per_s) and, per kernel, its bytes,
FLOPs and median time. Each kernel is a point at (FLOPs / byte, FLOP/s); the
roof is min(peak FLOP/s, intensity x peak bandwidth).

usage: plot_roofline.py RESULTS.json OUT.png [--title TEXT]
Needs matplotlib (Debian: python3-matplotlib); not a build dependency.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    try:
        with open(args.results) as f:
            data = json.load(f)
        bw = float(data["peak_bytes_per_s"])
        peak = float(data["peak_flop_per_s"])
        rows = data["results"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{args.results}: not a myelin bench JSON file ({e})")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_roofline.py needs matplotlib (apt-get install python3-matplotlib)")

    points = []
    for r in rows:
        t = float(r["median_ms"]) / 1e3
        if t <= 0 or float(r["bytes"]) <= 0:
            continue
        label = r["kernel"] if "model" not in r else f'{r["model"]} {r["kernel"]}'
        points.append((float(r["flops"]) / float(r["bytes"]), float(r["flops"]) / t, label))
    if not points:
        sys.exit(f"{args.results}: no kernel results to plot")

    lo = min(p[0] for p in points + [(peak / bw, 0, "")]) / 4
    hi = max(p[0] for p in points + [(peak / bw, 0, "")]) * 4
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    ax.loglog(xs, [min(peak, x * bw) for x in xs], "k-", lw=1.5,
              label=f"roof: {bw / 1e9:.0f} GB/s, {peak / 1e12:.3g} TFLOP/s")
    for x, y, label in points:
        ax.loglog([x], [y], "o", ms=5)
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved FLOP/s")
    device = data.get("device", "?")
    ax.set_title(args.title or f"myelin bench roofline: {device}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(points)} kernels)")


if __name__ == "__main__":
    main()
