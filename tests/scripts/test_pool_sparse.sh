#!/usr/bin/env bash
# A sparse job end to end (real processes on 127.0.0.1): one CPU contributor
# uploads top-k sparse pseudo-gradients with error feedback; its residual is
# kept in its work directory, and after a kill -9 the restarted contributor
# reads it for its next round (and drops none).
# The held-out loss falls, every upload is accepted, and each one is a small
# fraction of fp32. Scoring and replays run with the job's defaults.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"

"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
start_pool --heartbeat-timeout 2
cat > job.json <<JSON
{"name": "sparse", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 1},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 3, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.5, "rounds": 8, "min_contributors": 1, "max_contributors": 1,
 "round_deadline_s": 30, "compression": "sparse", "topk_density": 0.05, "value_bits": 4,
 "chunk_size": 1024, "val_batches": 4}
JSON
wait_for '"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job.json > submit.log 2>&1' 20
grep -q "submitted job 1" submit.log || fail "submit: $(cat submit.log)"

common=(--pool "$URL" --token "$TOK" --threads 1 --work-dir wd --name c1)
"$MYELIN" contribute "${common[@]}" --debug-step-delay-ms 500 > c1.log 2>&1 &
PIDS+=($!); C1=$!
wait_for 'grep -q "round 2 .*-> pending" c1.log' 90
kill -9 $C1
echo "killed c1 (-9) after its round 2 upload"
# The residual file names the round after the last upload (it is written
# just before the upload's log line).
residual=$(find wd -name residual.bin)
[ -n "$residual" ] || fail "no residual.bin in the work directory"
residual_for() { # job and round of a residual file (runtime/pool/residual.h)
  python3 -c "import struct,sys; print(*struct.unpack_from('<qq', open(sys.argv[1],'rb').read(), 8))" "$1"
}
last=$(sed -n 's/.*job 1 round \([0-9]*\) slot.*-> pending.*/\1/p' c1.log | tail -1)
next=$((last + 1))
[ "$(residual_for "$residual")" = "1 $next" ] ||
  fail "residual file is for $(residual_for "$residual"), expected job 1 round $next"
"$MYELIN" contribute "${common[@]}" --exit-when-idle > c1b.log 2>&1 &
PIDS+=($!); C1B=$!
end=$((SECONDS + 120))
while kill -0 $C1B 2>/dev/null; do [ $SECONDS -lt $end ] || fail "contributor did not finish"; sleep 0.2; done
wait $C1B || fail "restarted contributor exited non-zero: $(tail c1b.log)"
# The restart uploads round $next first, with the file's residual.
first=$(sed -n 's/.*job 1 round \([0-9]*\) slot.*/\1/p' c1b.log | head -1)
[ "$first" = "$next" ] || fail "the restart's first upload is round $first, expected $next"
grep -q "residual for round $next read from" c1b.log || fail "the restart did not read the residual file"
if grep -q "residual dropped" c1.log c1b.log; then
  fail "$(grep -h 'residual dropped' c1.log c1b.log)"
fi
[ "$(residual_for "$residual")" = "1 8" ] || fail "final residual file is for $(residual_for "$residual")"

"$MYELIN" pool status --pool "$URL" --token "$TOK" --json > status.json
"$MYELIN" pool ledger --pool "$URL" --token "$TOK" --format json > ledger.json
python3 - <<'PY' || fail "checks on status/ledger failed"
import json
job = json.load(open("status.json"))["jobs"][0]
assert job["status"] == "done" and job["round"] == 8, job["status"]
first, last = job["init_val_loss"], job["history"][-1]["val_loss"]
print(f"held-out loss: {first:.4f} (initial) -> {last:.4f} after 8 sparse rounds")
assert last < first - 0.3, "held-out loss did not fall enough"
led = json.load(open("ledger.json"))
assert len(led) >= 8 and all(r["status"] == "accepted" for r in led), led
ratio = max(r["bytes"] / r["raw_bytes"] for r in led)
print(f"largest upload: {100 * ratio:.2f}% of fp32")
assert ratio < 0.1, ratio
PY
echo "pool sparse: OK"
