#!/usr/bin/env bash
# Bad input gives exit code 2 and a one-line message naming the file or flag,
# never a crash, a hang or a silent run.
source "$(dirname "$0")/common.sh" "$@"
"$MYELIN" data synthetic --out data --examples 2000 >/dev/null
"$MYELIN" train --train-data 'data/addition_train_*.bin' --layers 1 --channels 16 --heads 2 \
  --max-seq-len 16 --seq-len 16 --batch-size 2 --steps 1 --quiet --save model.bin
# A Llama-family model file (Myelin's Llama header, runtime/io/model_file.h).
"$MYELIN" train --train-data 'data/addition_train_*.bin' --layers 1 --channels 16 --heads 2 \
  --family llama --kv-heads 1 --intermediate-size 24 --untied-head \
  --max-seq-len 16 --seq-len 16 --batch-size 2 --steps 1 --quiet --save llama.bin
ok=(--layers 1 --channels 16 --heads 2 --max-seq-len 16 --seq-len 16 --batch-size 2 --steps 1 --quiet)
data=(--train-data 'data/addition_train_*.bin')
# The default shape (L4 C128 NH4 V256) at T 16; each case sets what it tests
# (Boost refuses a flag given twice, which would pass for the wrong reason).
base=(--max-seq-len 16 --seq-len 16 --quiet "${data[@]}")
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
m = open('llama.bin', 'rb').read()
word = lambda i, v: m[:4 * i] + struct.pack('<i', v) + m[4 * i + 4:]
open('llama_kv.bin', 'wb').write(word(8, 3))        # 3 kv heads for 2 heads
open('llama_tied.bin', 'wb').write(word(10, 2))     # tied flag neither 0 nor 1
open('llama_eps.bin', 'wb').write(word(12, 0))      # RMSNorm eps 0
open('llama_res.bin', 'wb').write(word(200, 5))     # a reserved word set
open('llama_trunc.bin', 'wb').write(m[:-4])
# The issue's wrapping shape in a 1024-byte model file: maxT 1, V 256, L 5,
# NH 1, C 2^29, Vp 2147483580 (the parameter count wrapped to 0 before).
open('huge.bin', 'wb').write(hdr(20240326, 3, 1, 256, 5, 1, 536870912, 2147483580))
# Tokens 0..7 only, for a model of vocabulary 8.
# uint32 tokens (magic 20240801, version 7): ids above 65535 for a vocabulary of 70000.
open('wide.bin', 'wb').write(hdr(20240801, 7, 200) + struct.pack('<200I', *[65000 + i * 23 for i in range(200)]))
open('bigtoken32.bin', 'wb').write(hdr(20240801, 7, 100) + struct.pack('<100I', *([66000] * 50 + [70000] + [66000] * 49)))
open('badversion32.bin', 'wb').write(hdr(20240801, 1, 100) + b'\0' * 400)
open('trunc32.bin', 'wb').write(hdr(20240801, 7, 100) + b'\0' * 200)
open('small.bin', 'wb').write(hdr(20240520, 1, 200) + struct.pack('<200H', *[i % 8 for i in range(200)]))
PY
expect2 "nothere_*.bin" train "${ok[@]}" --train-data 'nothere_*.bin'
expect2 "llama_kv.bin: bad model header: kv_heads: expected 1..2, got 3" train --model llama_kv.bin "${data[@]}" --steps 1 --quiet
expect2 "llama_tied.bin: bad model header: tied_head: expected 0 or 1" train --model llama_tied.bin "${data[@]}" --steps 1 --quiet
expect2 "llama_eps.bin: bad model header: norm_eps" train --model llama_eps.bin "${data[@]}" --steps 1 --quiet
expect2 "llama_res.bin: bad model header: reserved word 200" train --model llama_res.bin "${data[@]}" --steps 1 --quiet
expect2 "llama_trunc.bin: truncated model file" train --model llama_trunc.bin "${data[@]}" --steps 1 --quiet
expect2 "badmagic.bin: not a token shard" train "${ok[@]}" --train-data badmagic.bin
expect2 "badversion.bin: unsupported token shard version 7" train "${ok[@]}" --train-data badversion.bin
expect2 "truncated.bin" train "${ok[@]}" --train-data truncated.bin
expect2 "bigtoken.bin: token 300 at position 50" train "${ok[@]}" --train-data bigtoken.bin
"$MYELIN" train "${ok[@]}" --vocab 70000 --train-data wide.bin >/dev/null || fail "training on uint32 tokens"
expect2 "bigtoken32.bin: token 70000 at position 50" train "${ok[@]}" --vocab 70000 --train-data bigtoken32.bin
expect2 "badversion32.bin: unsupported token shard version 1" train "${ok[@]}" --vocab 70000 --train-data badversion32.bin
expect2 "trunc32.bin: token shard is 1224 bytes, expected 1424" train "${ok[@]}" --vocab 70000 --train-data trunc32.bin
expect2 "--seq-len: expected 1..16" train --max-seq-len 16 --seq-len 64 --quiet "${data[@]}"
expect2 "--seq-len" train --model model.bin --seq-len 17 --train-data 'data/addition_train_*.bin' --quiet
expect2 "model_trunc.bin: truncated" train --model model_trunc.bin --seq-len 16 --train-data 'data/addition_train_*.bin'
expect2 "model_v4.bin: unsupported model version 4" train --model model_v4.bin --train-data 'data/addition_train_*.bin'
expect2 "notes.txt" train --model notes.txt --train-data 'data/addition_train_*.bin'
expect2 "--lr" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --lr -1
expect2 "--lr" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --lr abc
expect2 "--batch-size: expected 1..16777216, got 0" train "${base[@]}" --batch-size 0
expect2 "--beta2" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --beta2 1.5
expect2 "--device" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --device tpu
expect2 "--channels: 15 is not a multiple of heads" train "${base[@]}" --channels 15 --heads 2
expect2 "--train-data" train "${ok[@]}"
expect2 "--checkpoint-dir" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --resume
expect2 "no-such-flag" train --no-such-flag
expect2 "unknown command" frobnicate
# The pool's options file (train --options-file): read like the flags.
expect2 "--options-file: cannot read" train --options-file nothere.txt
printf 'layers = 1\nfrobnicate = 3\n' > opts_unknown.txt
expect2 "frobnicate" train --options-file opts_unknown.txt
printf 'lr = -1\n' > opts_lr.txt
expect2 "--lr" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --options-file opts_lr.txt
expect2 "--input" data text --input nothere.txt --out d
expect2 "--task" data synthetic --task multiplication --out d
expect2 "--recompute" train "${ok[@]}" --train-data 'data/addition_train_*.bin' --recompute 3
expect2 "--preset" train --preset 3B --memory-plan
expect2 "--recompute" train --preset 124M --recompute -1 --memory-plan
expect2 "model_trunc.bin: truncated" train --model model_trunc.bin --memory-plan
# Sizes: one overflow-safe check with bounds, exit 2 before any allocation.
expect2 "--channels: expected 1..65536, got 536870912" train --layers 5 --heads 1 \
  --channels 536870912 --vocab 256 --padded-vocab 2147483580 --max-seq-len 1 --seq-len 1 "${data[@]}"
expect2 "--padded-vocab" train "${base[@]}" --vocab 256 --padded-vocab 2147483580
expect2 "--channels" train "${base[@]}" --channels 1073741824
expect2 "--vocab" train "${base[@]}" --vocab 2147483647
expect2 "--layers/--channels" train "${base[@]}" --layers 4096 --channels 16384 --heads 2
expect2 "--batch-size" train "${base[@]}" --batch-size 2147483647
# Within the bounds but not within this machine: 51.5e9 parameters (about 960 GiB
# on the CPU) are refused before allocating, not killed by the OOM killer.
if [ "$(awk '/MemTotal/ {print $2}' /proc/meminfo)" -lt 900000000 ]; then
  expect2 "--layers/--channels/--batch-size: the model" train "${base[@]}" --layers 1 \
    --channels 65536 --heads 64
fi
expect2 "--batch-size" train "${base[@]}" --batch-size 2147483648
expect2 "huge.bin: bad model header: channels" train --model huge.bin "${data[@]}"
expect2 "huge.bin: bad model header: channels" train --model huge.bin --memory-plan
grep -q "0M params" out.txt && fail "--memory-plan printed a plan for huge.bin: $(cat out.txt)"
expect2 "--pp" train "${ok[@]}" "${data[@]}" --dp 65536 --pp 65536
expect2 "--pp-layers" train --layers 2 --channels 16 --heads 2 --max-seq-len 16 -t 16 --pp 2 \
  --pp-layers 2147483647,2147483647 --memory-plan
expect2 "--keep-checkpoints" train "${ok[@]}" "${data[@]}" --keep-checkpoints -1
expect2 "--seed" train "${ok[@]}" "${data[@]}" --seed -1
expect2 "--steps" train "${base[@]}" --steps 2147483648
expect2 "--shard-tokens" data synthetic --out d --shard-tokens -1
expect2 "--shard-tokens" data synthetic --out d --shard-tokens 4294967296
expect2 "--examples" data synthetic --out d --examples -5
expect2 "--vocab" bench --vocab 0
expect2 "--heads" bench --heads 0
expect2 "--batch" bench --batch 2147483647
expect2 "--min-bytes" bench --comm --min-bytes -1
if "$MYELIN" pool --help >/dev/null 2>&1; then # built with the pool
  expect2 "--job" pool stop --pool http://127.0.0.1:9 --token t --job 0
  expect2 "--job" pool ledger --pool http://127.0.0.1:9 --token t --job -3
  expect2 "--max-upload-mb" pool serve --state-dir st --max-upload-mb 1e30
  expect2 "--listen: bad port" pool serve --state-dir st --listen 127.0.0.1:8470abc
  echo t > token.txt
  expect2 "--ranks" contribute --pool http://127.0.0.1:9 --token-file token.txt --ranks -1
  expect2 "--timeout" contribute --pool http://127.0.0.1:9 --token-file token.txt --timeout 0
fi
# Sampling feeds the newline and the prompt's bytes to the model: each must be
# inside the vocabulary (a vocabulary under 256 lacks some bytes).
expect2 "--sample-prompt" train "${ok[@]}" "${data[@]}" --vocab 64 --sample-every 1 --sample-prompt A
expect2 "--sample-every" train "${ok[@]}" --train-data small.bin --vocab 8 --sample-every 1
# The exact-match evaluation: a known task, digits and counts in range, whole
# problems inside a row, a whole byte-level model.
expect2 "--eval-task: expected addition" train "${ok[@]}" "${data[@]}" --eval-task multiplication
expect2 "--eval-digits: expected 1..9" train "${ok[@]}" "${data[@]}" --eval-task addition --eval-digits 0
expect2 "--seq-len >= 18" train "${ok[@]}" "${data[@]}" --eval-task addition --eval-digits 5
expect2 "--eval-examples" train "${ok[@]}" "${data[@]}" --eval-task addition --eval-examples 0
expect2 "--eval-task: needs --pp 1" train "${ok[@]}" "${data[@]}" --eval-task addition --eval-digits 2 --pp 2
expect2 "--eval-task: needs a byte-level model" train "${ok[@]}" --train-data small.bin --vocab 8 --eval-task addition --eval-digits 2
# Outputs are checked before training starts (no step runs).
expect2 "--save" train --layers 1 --channels 16 --heads 2 --max-seq-len 16 --seq-len 16 \
  --batch-size 2 --steps 50 "${data[@]}" --save nodir/model.bin
grep -q "step" out.txt && fail "trained before refusing --save: $(cat out.txt)"
expect2 "--metrics-out" train "${ok[@]}" "${data[@]}" --metrics-out nodir/m.jsonl
expect2 "--checkpoint-dir" train "${ok[@]}" "${data[@]}" --checkpoint-dir notes.txt --checkpoint-every 1
expect2 "--save" train "${ok[@]}" "${data[@]}" --save data
# --memory-plan needs no GPU and no data: the GPT-2 124M plan at 64 x 1024.
"$MYELIN" train --preset 124M --device cuda -b 64 -t 1024 --memory-plan > plan.txt
grep -q "124.476M params | bf16 | micro-batch 64x1024" plan.txt || fail "memory plan header: $(cat plan.txt)"
grep -q "total 27.56" plan.txt || fail "memory plan total: $(cat plan.txt)"
# The Llama family's shape flags, validated with the rest of the shape.
L=(train --family llama --layers 1 --channels 16 --heads 4 --memory-plan)
expect2 "--kv-heads: 3 does not divide heads (4)" "${L[@]}" --kv-heads 3
expect2 "--kv-heads: expected 0 (as many as heads) or a positive count, got -1" "${L[@]}" --kv-heads -1
expect2 "--intermediate-size: expected 0 (4 x channels) or a positive width, got -5" "${L[@]}" \
  --intermediate-size -5
expect2 "--rope-theta: expected a positive number" "${L[@]}" --rope-theta 0
expect2 "--norm-eps: expected a number in (0, 1]" "${L[@]}" --norm-eps inf
expect2 "must be even for rotary embeddings" train --family llama --layers 1 --channels 12 \
  --heads 4 --memory-plan
expect2 "--kv-heads: GPT-2 has as many key/value heads as heads" train --layers 1 --channels 16 \
  --heads 4 --kv-heads 2 --memory-plan
expect2 "--family: expected gpt2 or llama" train --family mistral --memory-plan
echo "bad input: $n cases exit 2 with a one-line message"
