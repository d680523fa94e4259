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
source "$(dirname "${BASH_SOURCE[0]}")/reference_common.sh" gpt2_numpy.py "$@"

"$PY" "$REF" make --model init.bin --shard train.bin --V 67 --Vp 80 --L 2 --NH 2 --C 16 \
  --maxT 16 --ntok 88 --seed 7

echo "== reference backward against finite differences"
"$PY" "$REF" gradcheck --model init.bin --train-data train.bin --batch-size 2 --seq-len 8

# The main case: gradient accumulation, the loader wraps.
reference_case accum 2 8 2 8 --seq-len 8
# seq-len = maxT: every position row trained.
reference_case full 1 16 1 6 --seq-len 16

if [[ $status -eq 0 ]]; then echo "llmc exactness: PASS"; else echo "llmc exactness: FAIL"; fi
exit $status
