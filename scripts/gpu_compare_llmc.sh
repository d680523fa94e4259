#!/usr/bin/env bash
# Myelin next to llm.c: GPT-2 124M training throughput on one GPU, same shape.
#
# Usage (on a GPU machine, after scripts/gpu_session.sh has built build-gpu/; the
# session script itself runs it in two parts, see docs/gpu.md):
#   LLMC_DIR=.deps/llm.c bash scripts/gpu_compare_llmc.sh
#   bash scripts/gpu_compare_llmc.sh --summary-only   # re-read the logs already in $OUT
#   bash scripts/gpu_compare_llmc.sh --build-only     # only step 2 (needs no build-gpu/)
#
# What it does:
#  1. writes token shards (llm.c's format) with build-gpu/myelin: synthetic addition,
#     13 tokens per example, 90% train / 10% val; sized so that the train split holds
#     STEPS+4 batches of B*T tokens (64x1024x40: 246461 examples, 3.2M tokens, no
#     wrap-around) and the val split at least one batch (llm.c requires every shard, val
#     included, to hold B*T+1 tokens); byte-level ids < 256 are valid GPT-2 ids;
#  2. builds llm.c's train_gpt2cu in $LLMC_DIR (skipped when the binary exists and its
#     libraries resolve): make train_gpt2cu NO_MULTI_GPU=1 NO_USE_MPI=1 USE_CUDNN=0
#     GPU_COMPUTE_CAPABILITY=90 (NO_USE_MPI because its Makefile links MPI whenever an
#     OpenMPI folder exists, although a single-GPU run does not use it). If that plain
#     build fails it retries once with two build-only workarounds, written by this
#     script into $LLMC_DIR/build/compat: a header that restores the int-device
#     cudaMemAdvise overload CUDA 13 removed (active only for CUDART_VERSION >= 13000),
#     and a link folder with libnvidia-ml.so (the driver's libnvidia-ml.so.1, the
#     toolkit's stub, or an empty stub whose soname is libnvidia-ml.so.1) for machines
#     that lack the unversioned library. Without `make` it calls nvcc with the
#     Makefile's own command line;
#  3. runs llm.c, its defaults except the shape: -e d12 (fresh random GPT-2 124M)
#     -b 64 -t 1024 -x 40, validation only at the first and last step on one batch
#     (-v 1000 -m 1), no sampling (-s 0); -l 6e-4 -c 0.1 so that both engines use the
#     same lr and weight decay (its schedule stays constant, final fraction 1.0);
#     recompute stays at its default (1, GeLU), gelu fusion at its default;
#  4. runs Myelin the same shape: --preset 124M --device cuda (bf16) -b 64 -t 1024
#     --steps 40 --lr 6e-4 --weight-decay 0.1 --lr-schedule constant, once per
#     --recompute level in MYELIN_RECOMPUTE (default "0 1"), each only when its
#     --memory-plan fits the GPU's free memory;
#  5. prints one table: per-step tok/s = B*T / step time (llm.c prints a smoothed
#     tok/s; the table recomputes it from its per-step ms), median over steps
#     FIRST_STEP..STEPS (default 10..40, the first steps are warmup), median step ms,
#     each engine's own MFU (llm.c: 6N + 6LCT FLOPs per token against its GPU table,
#     -100% = GPU not in its table; Myelin: 6N + 12LCT against 989 TFLOP/s, 756 on
#     PCIe) and a common MFU (6N + 6LCT, N = 124475904, against PEAK_TFLOPS, taken from
#     the GPU name unless set), the peak GPU memory seen by nvidia-smi and Myelin/llm.c.
#
# Every log goes to ${OUT:-gpu-out}/: compare_llmc_data.txt, llmc_build.txt,
# llmc_train.txt, myelin_r<R>_train.txt, myelin_r<R>_metrics.jsonl, *_mem.txt,
# compare_llmc.txt (the table) and compare_llmc.json. The shards go to
# build-gpu/compare_data (not to $OUT).
#
# llm.c's source is not part of this repository. Only train_gpt2.cu, Makefile, llmc/
# (and LICENSE) are needed, about 0.4 MB; see docs/gpu.md for how to get them into
# .deps/llm.c (git-ignored; never commit it). Without them the Myelin part still runs.
#
# Exit status: 0 unless Myelin itself fails (llm.c failing is reported, not fatal).
# Knobs (environment): OUT, LLMC_DIR, LLMC_SM (90), B (64), T (1024), STEPS (40),
# FIRST_STEP (10), MYELIN_RECOMPUTE ("0 1"; set but empty: llm.c only), RUN_TIMEOUT (180 s per training run),
# PEAK_TFLOPS, PYTHON (python3).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LLMC_DIR=${LLMC_DIR:-.deps/llm.c}
LLMC_SM=${LLMC_SM:-90}
B=${B:-64}
T=${T:-1024}
STEPS=${STEPS:-40}
FIRST_STEP=${FIRST_STEP:-10}
MYELIN_RECOMPUTE=${MYELIN_RECOMPUTE-0 1}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
PYTHON=${PYTHON:-python3}
MYELIN=$ROOT/build-gpu/myelin
DATA=$ROOT/build-gpu/compare_data
summary_only=0 build_only=0
[[ "${1:-}" == "--summary-only" ]] && summary_only=1
[[ "${1:-}" == "--build-only" ]] && build_only=1
if (( summary_only )) && [[ -f "$OUT/compare_llmc_env.txt" ]]; then
  # the shape the logs were made with
  B=$(sed -n 's/^B=\([0-9]*\) .*/\1/p' "$OUT/compare_llmc_env.txt")
  T=$(sed -n 's/^B=[0-9]* T=\([0-9]*\) .*/\1/p' "$OUT/compare_llmc_env.txt")
  F=$(sed -n 's/^B=.* FIRST_STEP=\([0-9]*\) .*/\1/p' "$OUT/compare_llmc_env.txt")
  B=${B:-64}
  T=${T:-1024}
  FIRST_STEP=${F:-$FIRST_STEP}
fi

say() { echo "[compare] $*"; }

# Libraries that gpu_session.sh unpacked (Boost, OpenBLAS) when run on its own.
arch=$ROOT/.deps/root/usr/lib/x86_64-linux-gnu
[[ -d "$arch" ]] && export LD_LIBRARY_PATH="$arch:$arch/openblas-pthread:${LD_LIBRARY_PATH:-}"

gpu_name() { nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1; }

# Peak GPU memory (MiB) while a command runs: nvidia-smi sampled every 500 ms.
mem_start() {
  MEMPID=
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$1" 2>/dev/null &
    MEMPID=$!
  fi
}
mem_stop() { [[ -n "${MEMPID:-}" ]] && { kill "$MEMPID" 2>/dev/null; wait "$MEMPID" 2>/dev/null; }; MEMPID=; }

# Line-buffered stdout so a run stopped by the timeout still leaves its step lines.
linebuf=()
command -v stdbuf >/dev/null 2>&1 && linebuf=(stdbuf -oL -eL)

myelin_failed=0
llmc_bin=
done_r=()

if (( ! summary_only )); then
  (( build_only )) || [[ -x "$MYELIN" ]] || { say "no $MYELIN: run scripts/gpu_session.sh first"; exit 1; }
  {
    echo "date: $(date -u)"
    echo "gpu: $(gpu_name)"
    echo "B=$B T=$T STEPS=$STEPS FIRST_STEP=$FIRST_STEP MYELIN_RECOMPUTE=$MYELIN_RECOMPUTE"
  } > "$OUT/compare_llmc_env.txt"

  # ---- 1. data (skipped by --build-only) -----------------------------------------------------
  if (( ! build_only )); then
    # 13 tokens per example; the train split must cover STEPS batches of B*T (+1 for the
    # shifted targets) and the val split (10%) at least one batch.
    need=$(( (STEPS + 4) * B * T + 1 ))
    examples=$(( (need * 10 / 9) / 13 + 1 ))
    minval=$(( (B * T + 1) * 10 / 13 + 1 ))
    (( examples < minval )) && examples=$minval
    if [[ ! -f "$DATA/.examples_$examples" ]]; then
      rm -rf "$DATA"
      "$MYELIN" data synthetic --task addition --examples "$examples" --out "$DATA" \
        > "$OUT/compare_llmc_data.txt" 2>&1 || { tail -5 "$OUT/compare_llmc_data.txt"; exit 1; }
      touch "$DATA/.examples_$examples"
  fi
  [[ -f "$LLMC_DIR/COMMIT" ]] && echo "llm.c commit: $(cat "$LLMC_DIR/COMMIT")" >> "$OUT/compare_llmc_env.txt"
  TRAIN="$DATA/addition_train_*.bin"
  VAL="$DATA/addition_val_*.bin"
  say "data: $examples addition examples in $DATA"
  fi

  # ---- 2. llm.c build ------------------------------------------------------------------------
  llmc_make() {  # $@: extra make variables
    local args=(NO_MULTI_GPU=1 NO_USE_MPI=1 USE_CUDNN=0 "GPU_COMPUTE_CAPABILITY=$LLMC_SM" "$@")
    if command -v make >/dev/null 2>&1; then
      echo "+ make train_gpt2cu ${args[*]} -j$(nproc)"
      make -C "$LLMC_DIR" train_gpt2cu "${args[@]}" -j"$(nproc)"
    else
      # the command line the Makefile produces for these settings
      local inc=
      for a in "$@"; do [[ $a == NVCC_INCLUDES=* ]] && inc=${a#NVCC_INCLUDES=}; done
      echo "+ (no make) nvcc ... train_gpt2.cu"
      (cd "$LLMC_DIR" && nvcc --threads=0 -t=0 --use_fast_math -std=c++17 -O3 \
        --generate-code "arch=compute_$LLMC_SM,code=[compute_$LLMC_SM,sm_$LLMC_SM]" -DENABLE_BF16 \
        train_gpt2.cu -lcublas -lcublasLt -lnvidia-ml $inc -o train_gpt2cu)
    fi
  }
  llmc_compat() {  # writes the build-only workarounds; sets COMPAT_INC and LIBRARY_PATH
    local c=$LLMC_DIR/build/compat
    mkdir -p "$c/lib"
    cat > "$c/cuda13_compat.h" <<'EOF'
// Written by Myelin's scripts/gpu_compare_llmc.sh, force-included only when a plain
// llm.c build fails: CUDA 13 dropped cudaMemAdvise(ptr, bytes, advice, int device).
#pragma once
#include <cuda_runtime.h>
#if defined(CUDART_VERSION) && CUDART_VERSION >= 13000
static inline cudaError_t cudaMemAdvise(const void* p, size_t n, enum cudaMemoryAdvise a, int dev) {
  struct cudaMemLocation loc;
  loc.type = dev < 0 ? cudaMemLocationTypeHost : cudaMemLocationTypeDevice;
  loc.id = dev < 0 ? 0 : dev;
  return cudaMemAdvise(p, n, a, loc);
}
#endif
EOF
    local cand=
    for f in /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1 /usr/lib64/libnvidia-ml.so.1 \
        /usr/local/nvidia/lib64/libnvidia-ml.so.1 \
        "$(dirname "$(command -v nvcc)")"/../lib64/stubs/libnvidia-ml.so \
        "$(dirname "$(command -v nvcc)")"/../targets/x86_64-linux/lib/stubs/libnvidia-ml.so; do
      [[ -e "$f" ]] && { cand=$f; break; }
    done
    if [[ -n "$cand" ]]; then
      ln -sf "$(readlink -f "$cand")" "$c/lib/libnvidia-ml.so"
    else
      echo "" | cc -x c -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 -o "$c/lib/libnvidia-ml.so" - ||
        echo "could not make a libnvidia-ml stub"
    fi
    echo "compat: -include $c/cuda13_compat.h, link folder $c/lib (libnvidia-ml.so -> ${cand:-empty stub})"
    LIBRARY_PATH="$(cd "$c/lib" && pwd):${LIBRARY_PATH:-}"
    export LIBRARY_PATH
    COMPAT_INC="NVCC_INCLUDES=-include $(cd "$c" && pwd)/cuda13_compat.h"
  }
  if [[ ! -f "$LLMC_DIR/train_gpt2.cu" ]]; then
    say "llm.c not found in '$LLMC_DIR' (set LLMC_DIR, or put llm.c's train_gpt2.cu, Makefile,"
    say "llmc/ and LICENSE there; on a machine with network:"
    say "  git clone https://github.com/karpathy/llm.c .deps/llm.c"
    say "see docs/gpu.md; .deps/ is git-ignored and must never be committed)."
    say "running the Myelin part only."
  else
    LLMC_DIR=$(cd "$LLMC_DIR" && pwd)
    llmc_bin=$LLMC_DIR/train_gpt2cu
    if [[ -x "$llmc_bin" ]] && ! ldd "$llmc_bin" 2>/dev/null | grep -q "not found"; then
      say "llm.c: using the existing $llmc_bin"
      echo "existing binary, not rebuilt" > "$OUT/llmc_build.txt"
    else
      rm -f "$llmc_bin"
      t0=$(date +%s)
      { llmc_make; } > "$OUT/llmc_build.txt" 2>&1
      if [[ ! -x "$llmc_bin" ]]; then
        echo "=== plain build failed; retrying with build-only workarounds ===" >> "$OUT/llmc_build.txt"
        llmc_compat >> "$OUT/llmc_build.txt" 2>&1
        { llmc_make "$COMPAT_INC"; } >> "$OUT/llmc_build.txt" 2>&1
      fi
      if [[ -x "$llmc_bin" ]]; then
        how="plain build"
        grep -q '^=== plain build failed' "$OUT/llmc_build.txt" && how="with the build-only workarounds"
        say "llm.c built in $(( $(date +%s) - t0 )) s ($how)"
      else
        say "llm.c build failed; last lines of $OUT/llmc_build.txt:"
        tail -15 "$OUT/llmc_build.txt"
        llmc_bin=
      fi
    fi
  fi

  if (( build_only )); then
    [[ -n "$llmc_bin" ]] || exit 1
    exit 0
  fi

  # ---- 3. llm.c run --------------------------------------------------------------------------
  rm -f "$OUT/llmc_train.txt" "$OUT/llmc_mem.txt"
  if [[ -n "$llmc_bin" ]]; then
    say "llm.c: -e d12 -b $B -t $T -x $STEPS"
    mem_start "$OUT/llmc_mem.txt"
    (cd "$OUT" && timeout "$RUN_TIMEOUT" "${linebuf[@]}" "$llmc_bin" -i "$TRAIN" -j "$VAL" -e d12 \
      -b "$B" -t "$T" -x "$STEPS" -v 1000 -m 1 -s 0 -l 6e-4 -c 0.1) > "$OUT/llmc_train.txt" 2>&1
    rc=$?
    mem_stop
    (( rc != 0 )) && { say "llm.c exited with $rc; last lines:"; tail -15 "$OUT/llmc_train.txt"; }
  fi

  # ---- 4. Myelin runs ------------------------------------------------------------------------
  free_mib=$(nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits 2>/dev/null | head -1)
  for r in $MYELIN_RECOMPUTE; do
    args=(train --preset 124M --device cuda -b "$B" -t "$T" --steps "$STEPS" --recompute "$r"
      --lr 6e-4 --weight-decay 0.1 --lr-schedule constant --train-data "$TRAIN")
    plan=$("$MYELIN" "${args[@]}" --memory-plan 2>&1)
    gib=$(sed -n 's/.*total \([0-9.]*\).*/\1/p' <<< "$plan" | head -1)
    echo "$plan" > "$OUT/myelin_r${r}_plan.txt"
    if [[ -n "$free_mib" && -n "$gib" ]] &&
       awk -v g="$gib" -v f="$free_mib" 'BEGIN { exit !(g * 1024 + 1024 > f) }'; then
      say "myelin --recompute $r: plan $gib GiB > free $free_mib MiB - 1 GiB, skipped"
      continue
    fi
    say "myelin --recompute $r (plan ${gib:-?} GiB)"
    rm -f "$OUT/myelin_r${r}_metrics.jsonl"
    mem_start "$OUT/myelin_r${r}_mem.txt"
    timeout "$RUN_TIMEOUT" "${linebuf[@]}" "$MYELIN" "${args[@]}" \
      --metrics-out "$OUT/myelin_r${r}_metrics.jsonl" > "$OUT/myelin_r${r}_train.txt" 2>&1
    rc=$?
    mem_stop
    done_r+=("$r")
    if (( rc != 0 )); then
      myelin_failed=1
      say "myelin --recompute $r exited with $rc; last lines:"
      tail -15 "$OUT/myelin_r${r}_train.txt"
    fi
  done
fi

# ---- 5. summary ----------------------------------------------------------------------------
runs=()
[[ -f "$OUT/llmc_train.txt" ]] && runs+=("llm.c (-r 1, default)|llmc|$OUT/llmc_train.txt|$OUT/llmc_mem.txt")
if (( summary_only )); then
  for f in "$OUT"/myelin_r*_train.txt; do
    [[ -f "$f" ]] && done_r+=("$(basename "$f" | sed 's/myelin_r\([0-9]*\)_train.txt/\1/')")
  done
fi
for r in "${done_r[@]}"; do
  runs+=("myelin --recompute $r|myelin|$OUT/myelin_r${r}_metrics.jsonl;$OUT/myelin_r${r}_train.txt|$OUT/myelin_r${r}_mem.txt")
done
if (( ${#runs[@]} == 0 )); then
  say "no run logs in $OUT"
  exit $(( myelin_failed ))
fi
"$PYTHON" - "$B" "$T" "$FIRST_STEP" "${PEAK_TFLOPS:-}" "$(gpu_name)" "$OUT/compare_llmc.json" \
  "${runs[@]}" <<'PY' | tee "$OUT/compare_llmc.txt"
import json, os, re, statistics, sys

B, T, first = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
peak_arg, gpu, json_out = sys.argv[4], sys.argv[5], sys.argv[6]
runs = [a.split("|") for a in sys.argv[7:]]

# GPT-2 124M, llm.c's count with the padded vocabulary (Vp 50304): the same N both report.
N, L, C = 124475904, 12, 768
flops_per_token = 6 * N + 6 * L * C * T
if peak_arg:
    peak = float(peak_arg) * 1e12
elif "H100 PCIe" in gpu:
    peak = 756e12
elif "H100 NVL" in gpu:
    peak = 835e12
elif "H100" in gpu or "H200" in gpu:
    peak = 989e12
elif "A100" in gpu:
    peak = 312e12
else:
    peak = 0.0

# llm.c: printf0("step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms |
#                 %.1f%% bf16 MFU | %.0f tok/s\n")  (its tok/s is a bias-corrected EMA)
LLMC = re.compile(r"^step\s+(\d+)/(\d+) \| loss (\S+) \(([^)]*)z\)\| norm (\S+) \(([^)]*)z\)\| "
                  r"lr (\S+) \| (\S+) ms \| (\S+)% bf16 MFU \| (\S+) tok/s")
# Myelin's terminal line (used only when the metrics file is missing)
MYL = re.compile(r"^step\s+(\d+)/(\d+) \| loss (\S+) \| lr (\S+) \| norm (\S+) \| (\S+) ms \| "
                 r"(\S+) tok/s.*?(?:\| MFU (\S+)%)?$")

def fnum(s):
    try:
        return float(s)
    except ValueError:
        return float("nan")

def parse_llmc(path):
    steps = []
    for line in open(path, errors="replace"):
        m = LLMC.match(line.strip())
        if m:
            ms = fnum(m.group(8))
            mfu = fnum(m.group(9)) / 100
            steps.append(dict(step=int(m.group(1)), loss=fnum(m.group(3)), ms=ms,
                              tok_s=B * T / (ms / 1000) if ms > 0 else float("nan"),
                              mfu=mfu if mfu > 0 else None, ema_tok_s=fnum(m.group(10))))
    return steps

def parse_myelin(spec):
    metrics, log = spec.split(";")
    steps = []
    if os.path.exists(metrics):
        for line in open(metrics):
            line = line.strip()
            if not line:
                continue
            try:
                j = json.loads(line)
            except ValueError:
                continue
            steps.append(dict(step=j["step"], loss=j.get("loss"), ms=j.get("ms"),
                              tok_s=j.get("tokens_per_s"), mfu=j.get("mfu")))
    if not steps and os.path.exists(log):
        for line in open(log, errors="replace"):
            m = MYL.match(line.strip())
            if m:
                mfu = m.group(8)
                steps.append(dict(step=int(m.group(1)), loss=fnum(m.group(3)),
                                  ms=fnum(m.group(6)), tok_s=fnum(m.group(7)),
                                  mfu=fnum(mfu) / 100 if mfu else None))
    return steps

def peak_mem(path):
    vals = []
    if os.path.exists(path):
        for line in open(path):
            try:
                vals.append(int(line.strip()))
            except ValueError:
                pass
    return max(vals) if vals else None

def med(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else None

rows = []
for label, kind, spec, mem in runs:
    steps = parse_llmc(spec) if kind == "llmc" else parse_myelin(spec)
    window = [s for s in steps if s["step"] >= first]
    row = dict(run=label, engine=kind, steps_logged=len(steps),
               window=f"{window[0]['step']}..{window[-1]['step']}" if window else "-",
               tok_s=med([s["tok_s"] for s in window]), ms=med([s["ms"] for s in window]),
               mfu_own=med([s["mfu"] for s in window]),
               final_loss=steps[-1]["loss"] if steps else None, peak_mem_mib=peak_mem(mem))
    row["mfu_common"] = row["tok_s"] * flops_per_token / peak if row["tok_s"] and peak else None
    if kind == "llmc" and steps:
        row["llmc_ema_tok_s_last"] = steps[-1]["ema_tok_s"]
    rows.append(row)

base = next((r["tok_s"] for r in rows if r["engine"] == "llmc" and r["tok_s"]), None)
for r in rows:
    r["vs_llmc"] = r["tok_s"] / base if base and r["tok_s"] else None

def f(v, fmt):
    return "-" if v is None else fmt.format(v)

print(f"GPT-2 124M, B={B} T={T}, medians over steps >= {first}; gpu: {gpu or 'unknown'}; "
      f"common MFU = tok/s x {flops_per_token / 1e9:.3f} GFLOP/token / "
      f"{f(peak / 1e12 if peak else None, '{:.0f}')} TFLOP/s")
hdr = (f"{'run':<26} {'steps':>7} {'tok/s':>10} {'ms/step':>9} {'MFU own':>8} "
       f"{'MFU common':>10} {'peak MiB':>9} {'loss':>7} {'vs llm.c':>8}")
print(hdr)
print("-" * len(hdr))
for r in rows:
    if not r["steps_logged"]:
        print(f"{r['run']:<26} no step lines in its log (it failed or was stopped)")
        continue
    print(f"{r['run']:<26} {r['window']:>7} {f(r['tok_s'], '{:.0f}'):>10} {f(r['ms'], '{:.2f}'):>9} "
          f"{f(r['mfu_own'] and r['mfu_own'] * 100, '{:.1f}%'):>8} "
          f"{f(r['mfu_common'] and r['mfu_common'] * 100, '{:.1f}%'):>10} "
          f"{f(r['peak_mem_mib'], '{:d}'):>9} {f(r['final_loss'], '{:.3f}'):>7} "
          f"{f(r['vs_llmc'], '{:.2f}x'):>8}")
if not base:
    print("(no llm.c run to compare with)")
json.dump(dict(gpu=gpu, B=B, T=T, first_step=first, peak_flops=peak,
               flops_per_token=flops_per_token, rows=rows), open(json_out, "w"), indent=1)
PY
exit $(( myelin_failed ))
