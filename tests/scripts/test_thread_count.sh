#!/usr/bin/env bash
# The same training run with 1, 2 and 3 threads saves bit-identical models,
# for a GPT-2 model and a Llama-family one (grouped-query attention, untied
# head): the CPU kernels cut their work by the shape, never by the thread
# count. A pool's coordinator replays a contributor's inner steps with its own
# thread count and compares; a volunteer with another core count must match.
source "$(dirname "$0")/common.sh" "$@"
"$MYELIN" data synthetic --out data --examples 2000 --seed 3 >/dev/null
common=(--train-data 'data/addition_train_*.bin' --layers 2 --heads 4 --channels 128 --vocab 256
  --max-seq-len 64 --seq-len 64 --batch-size 6 --grad-accum 2 --lr 1e-3 --weight-decay 0.1
  --grad-clip 1.0 --steps 3 --seed 11 --quiet)
for family in gpt2 llama; do
  extra=()
  [ "$family" = llama ] && extra=(--family llama --kv-heads 2 --untied-head --intermediate-size 320)
  for threads in 1 2 3; do
    "$MYELIN" train "${common[@]}" "${extra[@]}" --threads "$threads" \
      --metrics-out "m_${family}_$threads.jsonl" --save "${family}_$threads.bin"
  done
  for threads in 2 3; do
    cmp "${family}_1.bin" "${family}_$threads.bin" ||
      fail "$family: the model trained with $threads threads differs from 1 thread's"
    diff <(losses "m_${family}_1.jsonl") <(losses "m_${family}_$threads.jsonl") ||
      fail "$family: losses with $threads threads differ from 1 thread's"
  done
done
echo "thread count: gpt2 and llama models bit-identical with 1, 2 and 3 threads"
