# shellcheck shell=bash
# Shared part of the exactness tests against a float64 NumPy reference
# (test_llmc_exactness.sh, test_llama_reference.sh).
# Usage: source reference_common.sh REFERENCE.py "$@"
# Sets MYELIN, WORK, REF (tests/reference/REFERENCE.py), PY and status=0;
# exits 77 (skipped) when /usr/bin/python3 has no NumPy, 1 when MYELIN is not
# an executable; leaves the shell in a fresh WORK.
# Then, per case: reference_case NAME B T K STEPS [COMPARE-ARGS...] trains
# Myelin's CPU trainer and the reference from init.bin on train.bin with the
# same flags and compares losses and final parameters (1e-5 relative, plus
# COMPARE-ARGS); a disagreement sets status=1.
set -euo pipefail

REF_NAME=${1:?usage: source reference_common.sh REFERENCE.py <path-to-myelin> <work-dir>}
MYELIN=${2:?usage: $(basename "$0") <path-to-myelin> <work-dir>}
WORK=${3:?usage: $(basename "$0") <path-to-myelin> <work-dir>}
REF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../reference/$REF_NAME"
PY=/usr/bin/python3

if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "skipped: $PY cannot import numpy (install python3-numpy)"
  exit 77
fi
[[ -x "$MYELIN" ]] || {
  echo "FAIL: $MYELIN is not an executable"
  exit 1
}

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

status=0
reference_case() {
  local name=$1 B=$2 T=$3 K=$4 steps=$5
  shift 5
  echo "== case $name: batch $B x seq $T x accum $K, $steps steps"
  "$MYELIN" train --model init.bin --train-data train.bin --batch-size "$B" --seq-len "$T" \
    --grad-accum "$K" --steps "$steps" --lr 1e-3 --lr-schedule constant --warmup-steps 0 \
    --grad-clip 0 --weight-decay 0 --metrics-out "$name.myelin.jsonl" --quiet \
    --save "$name.myelin.bin"
  "$PY" "$REF" train --model init.bin --train-data train.bin --batch-size "$B" --seq-len "$T" \
    --grad-accum "$K" --steps "$steps" --lr 1e-3 --weight-decay 0 --quiet \
    --losses-out "$name.ref.jsonl" --save "$name.ref.bin"
  if ! "$PY" "$REF" compare --ref-losses "$name.ref.jsonl" --metrics "$name.myelin.jsonl" \
    --ref-model "$name.ref.bin" --model "$name.myelin.bin" --init init.bin \
    "$@" --loss-rtol 1e-5 --param-rtol 1e-5; then
    status=1
  fi
}
