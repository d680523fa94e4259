#!/usr/bin/env bash
# Data parallelism and ZeRO-1 on GPUs (NCCL on device buffers), against one
# GPU process on the same global batch: losses to 1e-5 relative over 10 fp32
# steps, saved models to float rounding; GPT-2 and the Llama family. Needs two
# CUDA devices and mpirun (NCCL refuses two ranks on one device): skipped
# otherwise.
source "$(dirname "$0")/common.sh" "$@"
command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; exit 77; }
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[ "${gpus:-0}" -ge 2 ] || { echo "skipped: needs two CUDA devices (found ${gpus:-0})"; exit 77; }
CMP="/usr/bin/python3 $(dirname "$0")/compare_runs.py"
MPI=(mpirun --oversubscribe --bind-to none)
"$MYELIN" data synthetic --out data --examples 3000 --seed 2 >/dev/null
for family in gpt2 llama; do
  C=(--device cuda --dtype fp32 --train-data data/addition_train_000.bin --layers 4 --channels 64
    --heads 4 --max-seq-len 32 --seq-len 32 --steps 10 --lr 1e-3 --warmup-steps 2 --grad-clip 1
    --weight-decay 0.1 --quiet)
  [ $family = llama ] && C+=(--family llama --kv-heads 2 --untied-head)
  ext=bin
  [ $family = llama ] && ext=safetensors
  "$MYELIN" train "${C[@]}" --batch-size 2 --grad-accum 4 --metrics-out $family.one.jsonl \
    --save $family.one.$ext
  for z in 0 1; do
    name=$family.dp2_zero$z
    "${MPI[@]}" -np 2 "$MYELIN" train "${C[@]}" --dp 2 --zero $z --batch-size 1 --grad-accum 4 \
      --metrics-out $name.jsonl --save $name.$ext
    $CMP $family.one.jsonl $name.jsonl 1e-5 $family.one.$ext $name.$ext || fail "$name"
  done
done
echo "gpu data parallel: dp2 and dp2 x zero1 match one GPU, GPT-2 and Llama"
