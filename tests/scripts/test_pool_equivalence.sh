#!/usr/bin/env bash
# With one contributor, H = 1, outer lr 1, no momentum and no compression, a
# pool round is a plain training step: the global model after round 1 equals
# `myelin train --steps 1 --save` from the same init and data, to float rounding;
# for a GPT-2 job from a seed, a Llama-family job started from a model file
# (init_checkpoint: GQA, untied head, saved as Hugging Face safetensors) and a
# Llama job from its shape and seed in the job file.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
start_pool
# One contributor, H=1, outer lr 1, no momentum, no compression: a round is one step.
cp "$(dirname "$0")/fixtures/pool_equivalence_job.json" job.json
end=$((SECONDS + 20))
until "$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job.json >/dev/null 2>&1; do
  [ $SECONDS -lt $end ] || fail "submit"; sleep 0.2
done
timeout 60 "$MYELIN" contribute --pool "$URL" --token "$ADMIN" --name solo --threads 1 --work-dir wd \
  --exit-when-idle > solo.log 2>&1 || fail "contributor: $(cat solo.log)"
[ -f st/jobs/1/model_000001.bin ] || fail "no global model after round 1"
"$MYELIN" train --train-data 'data/addition_train_*.bin' --layers 2 --heads 2 --channels 32 --vocab 256 \
  --padded-vocab 256 --max-seq-len 32 --seq-len 32 --batch-size 4 --steps 1 --lr 1e-3 \
  --lr-schedule constant --grad-clip 1.0 --seed 7 --threads 1 --save ref.bin --quiet
compare() { # compare POOL_ROUND1 REF INIT: the pool's round-1 model against one training step
  python3 - "$@" <<'PY' || fail "pool round differs from a training step ($1)"
import struct, sys
def load(p):
    b = open(p, "rb").read()
    return b[:1024], struct.unpack(f"<{(len(b) - 1024) // 4}f", b[1024:])
ha, a = load(sys.argv[1]); hb, b = load(sys.argv[2]); _, init = load(sys.argv[3])
assert ha == hb, "headers differ"
assert len(a) == len(b)
diff = max(abs(x - y) for x, y in zip(a, b))
moved = max(abs(x - y) for x, y in zip(b, init))
same = sum(x == y for x, y in zip(a, b))
print(f"{len(a)} params: max |pool - train| = {diff:.3g} (the step moved params by up to {moved:.3g}); "
      f"{same} of {len(a)} bit-identical")
assert moved > 1e-4, "the training step did not move the model"
assert diff <= 1e-6, "difference beyond float rounding"
PY
}
compare st/jobs/1/model_000001.bin ref.bin st/jobs/1/model_000000.bin

# The Llama family from a model file: a safetensors init (one step of training
# from a seed, so that no weight is at its initial value), a job naming it, one
# contributor, one round; against `myelin train --model` of the same file.
LL=(--train-data 'data/addition_train_*.bin' --family llama --layers 2 --heads 4 --kv-heads 2
  --channels 32 --vocab 256 --max-seq-len 32 --seq-len 32 --batch-size 4 --lr 1e-3
  --lr-schedule constant --grad-clip 1.0 --threads 1 --quiet)
mkdir -p init
"$MYELIN" train "${LL[@]}" --untied-head --steps 1 --seed 11 --save init/model.safetensors
sed -e 's|"model": {[^}]*}|"init_checkpoint": "init/model.safetensors"|' -e 's|"equiv"|"equiv-llama"|' \
  "$(dirname "$0")/fixtures/pool_equivalence_job.json" > job_llama.json
"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job_llama.json >/dev/null || fail "submit llama"
timeout 60 "$MYELIN" contribute --pool "$URL" --token "$ADMIN" --name solo --threads 1 --work-dir wd \
  --exit-when-idle > solo_llama.log 2>&1 || fail "contributor (llama): $(cat solo_llama.log)"
[ -f st/jobs/2/model_000001.bin ] || fail "no global Llama model after round 1"
"$MYELIN" train "${LL[@]}" --model init/model.safetensors --steps 1 --save ref_llama.bin
compare st/jobs/2/model_000001.bin ref_llama.bin st/jobs/2/model_000000.bin

# A Llama job from its shape in the job file (the train flags' fields): the
# coordinator initialises it from the seed as `myelin train --family llama` does.
sed -e 's|"model": {[^}]*}|"model": {"layers": 2, "heads": 4, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 13, "family": "llama", "kv_heads": 2, "tied_head": false}|' \
  -e 's|"equiv"|"equiv-llama-shape"|' "$(dirname "$0")/fixtures/pool_equivalence_job.json" > job_llama2.json
"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job_llama2.json >/dev/null || fail "submit llama shape"
timeout 60 "$MYELIN" contribute --pool "$URL" --token "$ADMIN" --name solo --threads 1 --work-dir wd \
  --exit-when-idle > solo_llama2.log 2>&1 || fail "contributor (llama shape): $(cat solo_llama2.log)"
[ -f st/jobs/3/model_000001.bin ] || fail "no global model after round 1 of the Llama-shape job"
"$MYELIN" train "${LL[@]}" --untied-head --steps 1 --seed 13 --save ref_llama2.bin
compare st/jobs/3/model_000001.bin ref_llama2.bin st/jobs/3/model_000000.bin
echo "pool equivalence: one round (H=1, outer lr 1, mu 0, no compression) == one training step, GPT-2 and Llama (from a file and from a job's shape)"
