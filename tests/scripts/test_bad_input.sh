#!/usr/bin/env bash
# Bad input gives exit code 2 and a one-line message naming the file or flag,
# never a crash, a hang or a silent run.
source "$(dirname "$0")/common.sh" "$@"
"$MYELIN" data synthetic --out data --examples 2000 >/dev/null
"$MYELIN" train --train-data 'data/addition_train_*.bin' --layers 1 --channels 16 --heads 2 \
  --max-seq-len 16 --seq-len 16 --batch-size 2 --steps 1 --quiet --save model.bin
ok=(--layers 1 --channels 16 --heads 2 --max-seq-len 16 --seq-len 16 --batch-size 2 --steps 1 --quiet)
python3 - <<'PY'
import struct
hdr = lambda *v: struct.pack('<256i', *(list(v) + [0] * (256 - len(v))))
open('badmagic.bin', 'wb').write(hdr(1234, 1, 100) + b'\0' * 200)
open('badversion.bin', 'wb').write(hdr(20240520, 7, 100) + b'\0' * 200)
open('truncated.bin', 'wb').write(hdr(20240520, 1, 100) + b'\0' * 150)
open('bigtoken.bin', 'wb').write(hdr(20240520, 1, 100) + struct.pack('<100H', *([65] * 50 + [300] + [65] * 49)))
m = open('model.bin', 'rb').read()
open('model_trunc.bin', 'wb').write(m[:-10])
open('model_v4.bin', 'wb').write(m[:4] + struct.pack('<i', 4) + m[8:])
open('notes.txt', 'w').write('hello')
PY
expect2 "nothere_*.bin" train "${ok[@]}" --train-data 'nothere_*.bin'
expect2 "badmagic.bin: not a token shard" train "${ok[@]}" --train-data badmagic.bin
expect2 "badversion.bin: unsupported token shard version 7" train "${ok[@]}" --train-data badversion.bin
expect2 "truncated.bin" train "${ok[@]}" --train-data truncated.bin
expect2 "bigtoken.bin: token 300 at position 50" train "${ok[@]}" --train-data bigtoken.bin
expect2 "--seq-len" train "${ok[@]}" --seq-len 64 --train-data 'data/addition_train_*.bin'
expect2 "--seq-len" train --model model.bin --seq-len 17 --train-data 'data/addition_train_*.bin' --quiet
expect2 "model_trunc.bin: truncated" train --model model_trunc.bin --seq-len 16 --train-data 'data/addition_train_*.bin'
expect2 "model_v4.bin: unsupported model version 4" train --model model_v4.bin --train-data 'data/addition_train_*.bin'
expect2 "notes.txt" train --model notes.txt --train-data 'data/addition_train_*.bin'
expect2 "--lr" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --lr -1
expect2 "--lr" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --lr abc
expect2 "--batch-size" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --batch-size 0
expect2 "--beta2" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --beta2 1.5
expect2 "--device" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --device tpu
expect2 "--channels" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --channels 15
expect2 "--train-data" train "${ok[@]}"
expect2 "--checkpoint-dir" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --resume
expect2 "no-such-flag" train --no-such-flag
expect2 "unknown command" frobnicate
expect2 "--input" data text --input nothere.txt --out d
expect2 "--task" data synthetic --task multiplication --out d
expect2 "--recompute" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --recompute 3
expect2 "--preset" train --preset 3B --memory-plan
expect2 "--recompute" train --preset 124M --recompute -1 --memory-plan
expect2 "model_trunc.bin: truncated" train --model model_trunc.bin --memory-plan
# --memory-plan needs no GPU and no data: the GPT-2 124M plan at 64 x 1024.
"$MYELIN" train --preset 124M --device cuda -b 64 -t 1024 --memory-plan > plan.txt
grep -q "124.476M params | bf16 | micro-batch 64x1024" plan.txt || fail "memory plan header: $(cat plan.txt)"
grep -q "total 27.56" plan.txt || fail "memory plan total: $(cat plan.txt)"
echo "bad input: $n cases exit 2 with a one-line message"
