#!/usr/bin/env bash
# The Llama family (RMSNorm, rotary embedding, SwiGLU, grouped-query attention)
# in every kind of parallel layout under real mpirun matches the one-process run
# of the same global batch: per-step losses to 1e-5 relative over 10 steps, saved
# models (F32 safetensors) to float rounding. Untied head, and a tied one whose
# embedding gradient is summed between the first and last pipeline stage.
source "$(dirname "$0")/common.sh" "$@"
command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; exit 77; }
CMP="/usr/bin/python3 $(dirname "$0")/compare_runs.py"
MPI=(mpirun --oversubscribe --bind-to none)
"$MYELIN" data synthetic --out data --examples 3000 --seed 2 >/dev/null
BASE=(--train-data data/addition_train_000.bin --family llama --layers 4 --channels 32 --heads 4
  --kv-heads 2 --intermediate-size 48 --max-seq-len 32 --seq-len 32 --steps 10 --lr 1e-3
  --warmup-steps 2 --grad-clip 1 --weight-decay 0.1 --quiet --threads 1)
for head in untied tied; do
  C=("${BASE[@]}")
  [ $head = untied ] && C+=(--untied-head)
  mkdir -p $head
  # Global batch: 8 rows of 32 tokens per step.
  "$MYELIN" train "${C[@]}" --batch-size 2 --grad-accum 4 --metrics-out $head/one.jsonl \
    --save $head/one.safetensors
  run() { # run NAME NP ARGS...
    local name=$head/$1 np=$2
    shift 2
    "${MPI[@]}" -np "$np" "$MYELIN" train "${C[@]}" "$@" --metrics-out "$name.jsonl" \
      --save "$name.safetensors"
    $CMP $head/one.jsonl "$name.jsonl" 1e-5 $head/one.safetensors "$name.safetensors" \
      > "$name.cmp" || { cat "$name.cmp"; fail "$head $name"; }
    cat "$name.cmp"
  }
  run pp2_gpipe 2 --pp 2 --pp-schedule gpipe --batch-size 2 --grad-accum 4
  run dp2_pp2_zero1 4 --dp 2 --pp 2 --zero 1 --batch-size 1 --grad-accum 4
  if [ $head = untied ]; then
    run dp2 2 --dp 2 --batch-size 1 --grad-accum 4
    run dp2_zero1 2 --dp 2 --zero 1 --batch-size 1 --grad-accum 4
    run pp2_1f1b 2 --pp 2 --pp-schedule 1f1b --batch-size 2 --grad-accum 4
  fi
done
echo "equivalence (llama): 7 layouts match the one-process run, tied and untied heads"
