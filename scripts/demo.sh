#!/usr/bin/env bash
# The main job on embedded default data: installs what is missing, builds,
# generates the synthetic addition task, and trains a tiny GPT on it (loss
# falls, samples are printed) with two data-parallel processes under mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
data=build/demo-data
./build/myelin data synthetic --task addition --digits 3 --examples 40000 --out "$data"
# Two data-parallel ranks, one thread each; 2 x 8 rows = the global batch of 16.
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpirun --oversubscribe --bind-to none -np 2 ./build/myelin train --dp 2 --threads 1 \
  --train-data "$data/addition_train_*.bin" --val-data "$data/addition_val_*.bin" \
  --layers 3 --channels 96 --heads 4 --max-seq-len 64 --seq-len 64 --batch-size 8 \
  --steps 600 --lr 2e-3 --warmup-steps 30 --weight-decay 0.01 --grad-clip 1.0 \
  --log-every 50 --val-every 100 --sample-every 200 --sample-len 80 \
  --checkpoint-dir build/demo-ckpt --checkpoint-every 200 --keep-checkpoints 2 \
  --metrics-out build/demo-metrics.jsonl --save build/demo-model.bin
