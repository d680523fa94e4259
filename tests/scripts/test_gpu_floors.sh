#!/usr/bin/env bash
# scripts/gpu_floors.py (predicted GPU floors, no GPU needed): its tables are
# internally consistent (check_gpu_floors.py) for the default sections and
# other shapes, tampered or stale rows are caught, and bad options exit 2.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CHECK=$ROOT/tests/scripts/check_gpu_floors.py
source "$(dirname "$0")/common.sh" "$@"
command -v python3 >/dev/null || { echo "skipped: python3 not installed"; exit 77; }
FLOORS=(python3 "$ROOT/scripts/gpu_floors.py")
"${FLOORS[@]}" > default.md || fail "default run exited $?"
python3 "$CHECK" < default.md || fail "default tables inconsistent"
grep -q '^### 124M: GPT-2 .*B=64, T=1024' default.md || fail "no GPT-2 124M section at B=64 T=1024"
grep -q '^### llama-1B: llama .*NKV=8' default.md || fail "no llama-1B section"
for args in "--model llama-135M --batch 4 --seq 512 --recompute 2" \
  "--model 1.5B --batch 8 --recompute 1" "--model 350M --batch 1 --seq 7"; do
  # shellcheck disable=SC2086
  "${FLOORS[@]}" $args > other.md || fail "$args exited $?"
  python3 "$CHECK" < other.md || fail "tables inconsistent for $args"
done
# The checker fails on a row whose floor does not follow from its bytes, and on
# a missing row (the parts no longer add up).
sed -E 's/^(\| 4 \| matmul_forward qkv [^|]*\| gemm \| 12 \| )406/\1906/' default.md > bad1.md
cmp -s default.md bad1.md && fail "tamper did not apply"
! python3 "$CHECK" < bad1.md 2>/dev/null || fail "checker missed a wrong floor"
grep -v 'rope_backward' default.md > bad2.md
! python3 "$CHECK" < bad2.md 2>/dev/null || fail "checker missed a missing row"
# ... and on rows that no longer describe the engine: GPT-2's fc matmul without
# the GeLU epilogue at recompute 0, attention off the tensor-core kernels.
sed 's/fc + GELU_AUX_BIAS epilogue/fc/' default.md > bad3.md
cmp -s default.md bad3.md && fail "GeLU tamper did not apply"
! python3 "$CHECK" < bad3.md 2>/dev/null || fail "checker missed the unfused GeLU"
sed 's/attention_backward_tc/attention_backward/' default.md > bad4.md
cmp -s default.md bad4.md && fail "attention tamper did not apply"
! python3 "$CHECK" < bad4.md 2>/dev/null || fail "checker missed the attention kernel"
# docs/perf.md holds the default output as it is now (model headings one level
# down): regenerate it there when the kernels or the script change.
python3 - "$ROOT/docs/perf.md" default.md <<'PY' || fail "docs/perf.md does not hold the current output of scripts/gpu_floors.py"
import sys
doc, gen = (open(f).read() for f in sys.argv[1:])
sys.exit(0 if gen.replace("\n### ", "\n#### ") in doc else 1)
PY
set +e
"${FLOORS[@]}" --model 124M --seq 2048 > /dev/null 2> err.txt
rc=$?
set -e
[ $rc = 2 ] || fail "--seq beyond the model's context exited $rc, expected 2"
grep -q -- '--batch/--seq' err.txt || fail "error does not name the flag: $(cat err.txt)"
echo "gpu_floors: tables consistent, tampering caught, bad options refused"
