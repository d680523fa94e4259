#!/usr/bin/env bash
# Exactness of the Llama family against an independent float64 NumPy
# implementation (tests/reference/llama_numpy.py: LlamaForCausalLM's
# mathematics, hand-written backward checked against finite differences,
# AdamW): Myelin's CPU trainer (fp32) and the reference train the same random
# model (GQA with 2 kv heads for 4 heads, untied head, RoPE with Llama 3
# scaling whose wavelengths fall in all three bands, SwiGLU, RMSNorm, padded
# vocabulary) from Myelin's Llama model file on the same llm.c token shard;
# their losses over 10 AdamW steps must agree to 1e-5 relative, their final
# parameters to 1e-5 of the largest parameter, and the padding rows must not
# move.
#
# usage: bash test_llama_reference.sh <path-to-myelin> <work-dir>
# exit: 0 pass, 1 fail, 77 skipped (no NumPy for /usr/bin/python3)
set -euo pipefail

MYELIN=${1:?usage: test_llama_reference.sh <path-to-myelin> <work-dir>}
WORK=${2:?usage: test_llama_reference.sh <path-to-myelin> <work-dir>}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REF="$HERE/../reference/llama_numpy.py"
PY=/usr/bin/python3

if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "skipped: $PY cannot import numpy (install python3-numpy)"
  exit 77
fi
[[ -x "$MYELIN" ]] || { echo "FAIL: $MYELIN is not an executable"; exit 1; }

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"

"$PY" "$REF" make --model init.bin --shard train.bin --seed 7

echo "== reference backward against finite differences"
"$PY" "$REF" gradcheck --model init.bin --train-data train.bin

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
    --grad-accum "$K" --steps "$steps" --lr 1e-3 --weight-decay 0 \
    --losses-out "$name.ref.jsonl" --save "$name.ref.bin"
  if ! "$PY" "$REF" compare --ref-losses "$name.ref.jsonl" --metrics "$name.myelin.jsonl" \
      --ref-model "$name.ref.bin" --model "$name.myelin.bin" --init init.bin \
      --loss-rtol 1e-5 --param-rtol 1e-5; then
    status=1
  fi
}

run_case accum 2 8 2 10   # gradient accumulation; the loader wraps
run_case full 1 16 1 10   # seq-len = maxT: every rotary position used

if [[ $status -eq 0 ]]; then echo "llama reference: PASS"; else echo "llama reference: FAIL"; fi
exit $status
