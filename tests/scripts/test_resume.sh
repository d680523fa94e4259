#!/usr/bin/env bash
# A run of 20 steps and a run of 10 steps + --resume + 10 steps give
# bit-identical losses and bit-identical final models (shuffled data, cosine
# schedule, clipping, weight decay and sampling all on, so every piece of state
# must be restored), for a GPT-2 model and for a Llama-family one (GQA, untied
# head: its checkpoints hold Myelin's Llama model file).
source "$(dirname "$0")/common.sh" "$@"
"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
common=(--train-data 'data/addition_train_*.bin' --val-data 'data/addition_val_*.bin'
  --layers 2 --channels 32 --heads 2 --max-seq-len 32 --seq-len 32 --batch-size 4
  --grad-accum 2 --lr 1e-3 --warmup-steps 3 --weight-decay 0.1 --grad-clip 1.0 --shuffle
  --seed 5 --steps 20 --val-every 5 --sample-every 7 --sample-len 8 --quiet)
run_case() {
  local name=$1
  shift
  local common=("$@")
  rm -rf ck full.jsonl part.jsonl resumed.jsonl
  "$MYELIN" train "${common[@]}" --metrics-out full.jsonl --save full.bin
  # The first run checkpoints at steps 10 and 20; dropping the step-20 one
  # leaves exactly what a run stopped after step 10 leaves behind.
  "$MYELIN" train "${common[@]}" --metrics-out part.jsonl --checkpoint-dir ck --checkpoint-every 10
  [ -f ck/step_00000010/manifest.txt ] || fail "no checkpoint at step 10"
  rm -rf ck/step_00000020
  head -n 10 part.jsonl > part10.jsonl
  "$MYELIN" train "${common[@]}" --resume --checkpoint-dir ck --metrics-out resumed.jsonl --save resumed.bin
  losses full.jsonl > a.txt
  { losses part10.jsonl; losses resumed.jsonl; } > b.txt
  [ "$(wc -l < a.txt)" = 20 ] || fail "full run has $(wc -l < a.txt) steps"
  [ "$(wc -l < b.txt)" = 20 ] || fail "interrupted + resumed runs have $(wc -l < b.txt) steps"
  diff a.txt b.txt || fail "losses differ between the full and the resumed run"
  cmp full.bin resumed.bin || fail "final models differ"
  echo "resume ($name): 20 losses bit-identical, final models identical"
}
run_case gpt2 "${common[@]}"
run_case llama "${common[@]}" --family llama --kv-heads 1 --intermediate-size 48 --untied-head \
  --rope-theta 500000
