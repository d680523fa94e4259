#!/usr/bin/env bash
# Exactness against llm.c's mathematics: Myelin's CPU trainer (fp32) and an
# independent float64 NumPy implementation (tests/reference/gpt2_numpy.py:
# forward, hand-written backward, llm.c's CPU AdamW) train the same random
# model on the same random shard; their per-step losses must agree to 1e-5
# relative and their final parameters to 1e-5 of the largest parameter.
# The model (V=67, Vp=80, L=2, NH=2, C=16, maxT=16) exercises the padded
# vocabulary; the shard (88 tokens = 5 batches of 2x8) makes the loader wrap.
#
# usage: bash test_llmc_exactness.sh <path-to-myelin> <work-dir>
# exit: 0 pass, 1 fail, 77 skipped (no NumPy for /usr/bin/python3)
set -euo pipefail

MYELIN=${1:?usage: test_llmc_exactness.sh <path-to-myelin> <work-dir>}
WORK=${2:?usage: test_llmc_exactness.sh <path-to-myelin> <work-dir>}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REF="$HERE/../reference/gpt2_numpy.py"
PY=/usr/bin/python3

if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "skipped: $PY cannot import numpy (install python3-numpy)"
  exit 77
fi
[[ -x "$MYELIN" ]] || { echo "FAIL: $MYELIN is not an executable"; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

"$PY" "$REF" make --model init.bin --shard train.bin --V 67 --Vp 80 --L 2 --NH 2 --C 16 \
  --maxT 16 --ntok 88 --seed 7

echo "== reference backward against finite differences"
"$PY" "$REF" gradcheck --model init.bin --train-data train.bin --batch-size 2 --seq-len 8

status=0
# run_case NAME B T K STEPS
run_case() {
  local name=$1 B=$2 T=$3 K=$4 steps=$5
  echo "== case $name: batch $B x seq $T x accum $K, $steps steps"
  "$MYELIN" train --model init.bin --train-data train.bin --batch-size "$B" --seq-len "$T" \
    --grad-accum "$K" --steps "$steps" --lr 1e-3 --lr-schedule constant --warmup-steps 0 \
    --grad-clip 0 --weight-decay 0 --metrics-out "$name.myelin.jsonl" --quiet \
    --save "$name.myelin.bin"
  "$PY" "$REF" train --model init.bin --train-data train.bin --batch-size "$B" --seq-len "$T" \
    --grad-accum "$K" --steps "$steps" --lr 1e-3 --weight-decay 0 --quiet \
    --losses-out "$name.ref.jsonl" --save "$name.ref.bin"
  if ! "$PY" "$REF" compare --ref-losses "$name.ref.jsonl" --metrics "$name.myelin.jsonl" \
      --ref-model "$name.ref.bin" --model "$name.myelin.bin" --init init.bin --seq-len "$T" \
      --loss-rtol 1e-5 --param-rtol 1e-5; then
    status=1
  fi
}

run_case accum 2 8 2 8    # the main case: gradient accumulation, loader wraps
run_case full 1 16 1 6    # seq-len = maxT: every position row trained

if [[ $status -eq 0 ]]; then echo "llmc exactness: PASS"; else echo "llmc exactness: FAIL"; fi
exit $status
