#!/usr/bin/env bash
# A contributor with several ranks (`contribute --ranks 2`: each round's inner
# steps run as `mpirun -np 2 myelin train --dp 2`) works beside a
# single-process one. Checks: (1) the hidden train options --data-slice and
# --data-start-batch read the intended rows (slice 1/2 from global batch 3 over
# dp 2 equals one process reading that slice); (2) with one contributor, H=1,
# outer lr 1, no momentum, no compression, the --ranks 2 contributor's round
# equals `myelin train --steps 1` to float rounding (dp averaging rounds
# differently; AdamW turns that into <= 1% of the step); (3) both contributors'
# work is accepted and the held-out loss falls; SIGINT during a round takes
# the mpirun child down and the agent leaves cleanly.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 -- "-$p" "$p" 2>/dev/null || true; done
  # children this test's contributors started (their command lines name this folder)
  for p in $(pgrep -f -- "$WORK/" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
}
same_model() { # A B TOL [INIT]: same header and params within TOL; INIT: the step moved them
python3 - "$@" <<'PY'
import struct, sys
def load(p):
    b = open(p, "rb").read()
    return b[:1024], struct.unpack(f"<{(len(b) - 1024) // 4}f", b[1024:])
ha, a = load(sys.argv[1]); hb, b = load(sys.argv[2]); tol = float(sys.argv[3])
assert ha == hb and len(a) == len(b), "headers differ"
diff = max(abs(x - y) for x, y in zip(a, b))
msg = f"{len(a)} params: max |a - b| = {diff:.3g}"
if len(sys.argv) > 4:
    _, init = load(sys.argv[4])
    moved = max(abs(x - y) for x, y in zip(b, init))
    msg += f" (moved by up to {moved:.3g})"
    assert moved > 1e-4, "the step did not move the model"
print(msg)
assert diff <= tol, f"difference {diff} beyond {tol}"
PY
}
WD="$WORK/"
"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
shape=(--layers 2 --heads 2 --channels 32 --vocab 256 --padded-vocab 256 --max-seq-len 32 --seq-len 32 --seed 7 --threads 1 --lr 1e-3 --lr-schedule constant --quiet)

# (1) --data-slice / --data-start-batch: dp 2 under mpirun with 2 rows each
# reads the rows of one process with 4 rows; another slice or start differs.
"$MYELIN" train --train-data 'data/addition_train_*.bin' "${shape[@]}" --batch-size 4 --steps 2 \
  --data-slice 1/2 --data-start-batch 3 --save s1.bin
timeout 60 mpirun -np 2 "$MYELIN" train --train-data 'data/addition_train_*.bin' "${shape[@]}" --batch-size 2 \
  --steps 2 --dp 2 --data-slice 1/2 --data-start-batch 3 --save s1dp.bin
"$MYELIN" train --train-data 'data/addition_train_*.bin' "${shape[@]}" --batch-size 4 --steps 2 \
  --data-slice 0/2 --data-start-batch 3 --save s0.bin
"$MYELIN" train --train-data 'data/addition_train_*.bin' "${shape[@]}" --batch-size 4 --steps 2 \
  --data-slice 1/2 --data-start-batch 4 --save s1b.bin
same_model s1.bin s1dp.bin 1e-6 || fail "dp 2 over slice 1/2 read other rows than one process"
! same_model s1.bin s0.bin 1e-6 >/dev/null 2>&1 || fail "--data-slice had no effect"
! same_model s1.bin s1b.bin 1e-6 >/dev/null 2>&1 || fail "--data-start-batch had no effect"

start_pool --heartbeat-timeout 5
submit() { wait_for '"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" '"$1"' > submit.log 2>&1' 20; }

# (2) equivalence: one --ranks 2 contributor, one round of one step.
# One contributor, H=1, outer lr 1, no momentum, no compression: a round is one step.
cp "$(dirname "$0")/fixtures/pool_equivalence_job.json" job1.json
submit job1.json
common=(--pool "$URL" --token "$ADMIN" --threads 1 --exit-when-idle)
timeout 60 "$MYELIN" contribute "${common[@]}" --name c_solo2 --ranks 2 --work-dir "${WD}wd0" \
  --mpirun-args=--oversubscribe > c_solo2.log 2>&1 || fail "contributor: $(cat c_solo2.log)"
grep -q "2 ranks: dp 2 x pp 1" c_solo2.log || fail "no multi-rank line: $(cat c_solo2.log)"
"$MYELIN" train --train-data 'data/addition_train_*.bin' "${shape[@]}" --batch-size 4 --steps 1 \
  --grad-clip 1.0 --save ref.bin
same_model st/jobs/1/model_000001.bin ref.bin 1e-5 st/jobs/1/model_000000.bin ||
  fail "a --ranks 2 pool round differs from a training step"

# (3) a --ranks 2 and a single-process contributor train together.
cat > job2.json <<JSON
{"name": "mixed", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 1},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 3, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.5, "rounds": 5, "min_contributors": 2, "max_contributors": 3,
 "round_deadline_s": 30, "compression": "int8", "block_size": 256, "val_batches": 4}
JSON
submit job2.json
"$MYELIN" contribute "${common[@]}" --name c_multi --ranks 2 --work-dir "${WD}wd1" \
  --mpirun-args=--oversubscribe > c_multi.log 2>&1 &
PIDS+=($!); CM=$!
"$MYELIN" contribute "${common[@]}" --name c_single --work-dir "${WD}wd2" > c_single.log 2>&1 &
PIDS+=($!); CS=$!
# A third, multi-rank, gets SIGINT while its mpirun child trains.
"$MYELIN" contribute "${common[@]}" --name c_quit --ranks 2 --work-dir "${WD}wdq" \
  --mpirun-args=--oversubscribe > c_quit.log 2>&1 &
PIDS+=($!); CQ=$!
wait_for 'pgrep -f -- "--options-file ${WD}wdq/" >/dev/null' 40
kill -INT $CQ
wait $CQ || fail "multi-rank contributor exited $? after SIGINT (expected 0): $(cat c_quit.log)"
grep -q "leaving the pool" c_quit.log || fail "no clean leave after SIGINT: $(cat c_quit.log)"
sleep 0.5
! pgrep -f -- "${WD}wdq/" >/dev/null || fail "the mpirun child outlived its agent: $(pgrep -af -- "${WD}wdq/")"
for p in $CM $CS; do
  end=$((SECONDS + 60))
  while kill -0 $p 2>/dev/null; do [ $SECONDS -lt $end ] || fail "contributor $p did not finish"; sleep 0.2; done
  wait $p || fail "contributor $p exited non-zero: $(tail -5 c_multi.log c_single.log)"
done
"$MYELIN" pool status --pool "$URL" --token "$ADMIN" --json > status.json
"$MYELIN" pool ledger --pool "$URL" --token "$ADMIN" --format json > ledger.json
python3 - <<'PY' || fail "checks on status/ledger failed"
import json
st = json.load(open("status.json"))
job = [j for j in st["jobs"] if j["name"] == "mixed"][0]
assert job["status"] == "done", job["status"]
first, last = job["init_val_loss"], job["history"][-1]["val_loss"]
print(f"held-out loss: {first:.4f} (initial) -> {last:.4f} after {len(job['history'])} rounds")
assert last < first - 0.2, "held-out loss did not fall"
led = [r for r in json.load(open("ledger.json")) if r.get("job", job["id"]) == job["id"]]
acc = {}
for r in led:
    if r["status"] == "accepted": acc[r["contributor"]] = acc.get(r["contributor"], 0) + 1
print("accepted rounds:", acc)
assert acc.get("c_multi", 0) >= 1 and acc.get("c_single", 0) >= 1, acc
assert all(r["status"] == "accepted" for r in led if r["contributor"] != "c_quit"), led
PY
echo "pool multirank: --ranks 2 matches a training step; works beside a single-process contributor"
