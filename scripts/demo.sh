#!/usr/bin/env bash
# The main job on embedded default data: installs what is missing, builds the
# CPU-only `myelin` (no pool, no tests) into build-demo/, generates the
# synthetic addition task (2-digit operands), and trains a tiny GPT on it with
# two data-parallel processes under mpirun. It prints the loss falling, the
# validation loss and the exact-match accuracy on held-out problems (never in
# the training data) every 100 steps, and at the end five held-out problems
# with the model's answers and
#   exact-match accuracy: X% (k/N held-out problems) after step S
#
# Environment (tests use these for a shortened run):
#   DEMO_STEPS   training steps (default 1000)
#   DEMO_MYELIN  an already built myelin: skip setup and build
#   DEMO_OUT     folder for data, checkpoints, metrics and the model
#                (default build-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${DEMO_STEPS:-1000}
out=${DEMO_OUT:-build-demo}
myelin=${DEMO_MYELIN:-}
if [ -z "$myelin" ]; then
  bash scripts/setup.sh
  MYELIN_BUILD_DIR=build-demo bash scripts/build.sh -DMYELIN_CUDA=OFF -DMYELIN_POOL=OFF \
    -DBUILD_TESTING=OFF
  myelin=./build-demo/myelin
fi
# Lines "42+17=950" of 10 tokens (the sum least significant digit first).
# Rows of 10 tokens hold one whole line each (shards start at a line), so
# every digit has the same position in every row.
"$myelin" data synthetic --task addition --digits 2 --examples 40000 --out "$out/data"
# Two data-parallel ranks, one thread each; 2 x 96 rows of 10 tokens per step.
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpirun --oversubscribe --bind-to none -np 2 "$myelin" train --dp 2 --threads 1 \
  --train-data "$out/data/addition_train_*.bin" --val-data "$out/data/addition_val_*.bin" \
  --layers 3 --channels 96 --heads 4 --max-seq-len 10 --seq-len 10 --batch-size 96 \
  --steps "$steps" --lr 3e-3 --warmup-steps 30 --final-lr-frac 0.1 --weight-decay 0.01 \
  --grad-clip 1.0 --log-every 50 --val-every 100 \
  --eval-task addition --eval-digits 2 --eval-examples 500 \
  --checkpoint-dir "$out/ckpt" --checkpoint-every 200 --keep-checkpoints 2 \
  --metrics-out "$out/metrics.jsonl" --save "$out/model.bin"
