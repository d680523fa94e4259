#!/usr/bin/env bash
# Downloads as small as uploads, and still the same model everywhere: the
# coordinator ships each round's compressed outer update and applies exactly
# the decoded update, so contributors that apply it hold the bit-identical
# global model. A job with one-step-delayed rounds (overlap) runs 16 rounds
# with a contributor that restarts, one that joins late, one killed -9 whose
# slot a waiting contributor takes within seconds, and a coordinator killed
# -9 and restarted. Checked: every upload started from the model the
# coordinator names (no checksum refusal), each contributor's held model is
# byte-identical to the coordinator's copy of that round, and after the first
# whole download contributors fetch only updates.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
HB=2
start_pool --heartbeat-timeout $HB
CODEC=${POOL_SYNC_CODEC:-'"compression": "int8"'}
cat > job.json <<JSON
{"name": "sync", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 4},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 3, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.5, "rounds": 16, "min_contributors": 2, "max_contributors": 3,
 "round_deadline_s": 30, $CODEC, "keep_snapshots": 20, "overlap": true, "val_batches": 2}
JSON
wait_for '"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job.json > submit.log 2>&1' 20
common=(--pool "$URL" --token "$TOK" --threads 1 --work-dir wd --exit-when-idle)
status() { "$MYELIN" pool status --pool "$URL" --token "$TOK" --json; }
closed() { python3 -c "import sqlite3; print(sqlite3.connect('file:st/pool.db?mode=ro', uri=True).execute(\"SELECT COUNT(*) FROM rounds WHERE status='closed'\").fetchone()[0])"; }

"$MYELIN" contribute "${common[@]}" --name c1 --debug-step-delay-ms 300 --stats-out c1.json > c1.log 2>&1 &
C1=$!; PIDS+=($C1)
"$MYELIN" contribute "${common[@]}" --name c2 --debug-step-delay-ms 300 --stats-out c2a.json > c2.log 2>&1 &
C2=$!; PIDS+=($C2)
# c2 leaves after its second upload and comes back with its work dir: it
# resumes from the model it saved and catches up by updates.
wait_for '[ "$(grep -c -- "-> pending\|-> accepted" c2.log)" -ge 2 ]' 60
kill -INT $C2; wait $C2 || fail "c2 exited $? after SIGINT"
"$MYELIN" contribute "${common[@]}" --name c2 --debug-step-delay-ms 300 --stats-out c2b.json >> c2.log 2>&1 &
C2=$!; PIDS+=($C2)
# c3 joins late and trains slowly; c4 joins after it and finds every slot taken.
wait_for '[ "$(closed)" -ge 3 ]' 60
"$MYELIN" contribute "${common[@]}" --name c3 --debug-step-delay-ms 600 > c3.log 2>&1 &
C3=$!; PIDS+=($C3)
wait_for 'status | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if any(c[\"name\"]==\"c3\" and c[\"state\"]==\"training\" for c in s[\"contributors\"]) else 1)"' 30
"$MYELIN" contribute "${common[@]}" --name c4 --debug-step-delay-ms 150 > c4.log 2>&1 &
C4=$!; PIDS+=($C4)
wait_for 'grep -q "joined" c4.log' 20
# Kill c3 mid-round: just after an upload it starts its next round (1.8 s).
n3=$(grep -c -- "-> pending" c3.log || true)
wait_for '[ "$(grep -c -- "-> pending" c3.log)" -gt '$n3' ]' 30
sleep 0.6
# c3 dies mid-round: its slot goes to the waiting c4 in the same round.
kill -9 $C3
KILLED_AT=$(date +%s.%N)
# (the round it held when it died: its last assignment)
R3=$(status | python3 -c "import json,sys; print([c['round'] for c in json.load(sys.stdin)['contributors'] if c['name']=='c3'][0])")
echo "killed c3 (-9) in round $R3"

# The coordinator dies and comes back on the same port.
wait_for '[ "$(closed)" -ge 9 ]' 90
kill -9 $SERVER
echo "killed the coordinator (-9) after $(closed) closed rounds"
sleep 1
"$MYELIN" pool serve --listen 127.0.0.1:$PORT --state-dir st --heartbeat-timeout $HB >> serve.log 2>&1 &
SERVER=$!; PIDS+=($SERVER)
for p in $C1 $C2 $C4; do
  end=$((SECONDS + 120))
  while kill -0 $p 2>/dev/null; do [ $SECONDS -lt $end ] || { show_logs; fail "contributor $p did not finish"; }; sleep 0.2; done
  wait $p || fail "contributor $p exited non-zero"
done
"$MYELIN" pool ledger --pool "$URL" --token "$TOK" --format json > ledger.json
status > status.json
HB=$HB R3=$R3 KILLED_AT=$KILLED_AT python3 - <<'PY' || { show_logs; fail "checks failed"; }
import json, glob, os, filecmp
st = json.load(open("status.json")); job = st["jobs"][0]
assert job["status"] == "done" and len(job["history"]) == 16, job
led = json.load(open("ledger.json"))
bad = [r for r in led if r["status"] == "rejected" and not r["reason"].startswith(("stale", "not assigned"))]
assert not bad, bad
assert not any("checksum" in r["reason"] for r in led)
acc = [r for r in led if r["status"] == "accepted"]
print(f"{len(acc)} accepted uploads, {len(led) - len(acc)} stale; held-out loss "
      f"{job['init_val_loss']:.4f} -> {job['history'][-1]['val_loss']:.4f}")
assert job["history"][-1]["val_loss"] < job["init_val_loss"] - 0.5
# every contributor's held model is the coordinator's model of that round, byte for byte
held = sorted(glob.glob("wd/*/job_1/model.round"))
assert len(held) == 4, held
for f in held:
    r = int(open(f).read())
    mine = os.path.join(os.path.dirname(f), "model.bin")
    theirs = f"st/jobs/1/model_{r:06d}.bin"
    assert filecmp.cmp(mine, theirs, shallow=False), (mine, theirs)
    print(f"{f.split('/')[1].split('_', 1)[1]}: model of round {r} identical to the coordinator's")
c1, c2a, c2b = (json.load(open(f)) for f in ("c1.json", "c2a.json", "c2b.json"))
for name, s in (("c1", c1), ("c2 (first run)", c2a), ("c2 (after restart)", c2b)):
    print(f"{name}: {s['rounds']} rounds, {s['model_downloads']} whole model downloads, "
          f"{s['model_update_downloads']} updates, {s['model_update_fallbacks']} fallbacks, "
          f"up {s['bytes_sent']/max(1,s['rounds']):.0f} B/round, down {s['model_bytes_downloaded']} B in all")
assert c1["model_downloads"] == 1 and c1["model_update_fallbacks"] == 0, c1
assert c1["model_update_downloads"] + c1["model_download_skips"] >= c1["rounds"] - 1, c1
assert c2b["model_downloads"] == 0 and c2b["model_update_downloads"] >= 1, c2b
# c4 took the dead c3's slot in the round c3 died in, within seconds
hb, r3, killed = float(os.environ["HB"]), int(os.environ["R3"]), float(os.environ["KILLED_AT"])
c4 = [r for r in acc if r["contributor"] == "c4" and r["round"] == r3]
assert c4, f"c4 has no accepted upload in round {r3}, where c3 died"
took = c4[0]["time"] - c4[0]["since_assigned_s"] - killed
print(f"c3 killed -9 in round {r3}; c4 was given its slot {took:.1f} s later (heartbeat timeout {hb:.0f} s)")
assert took <= hb + 3, took
for r in acc:
    assert r["bytes_up"] > 0 and r["bytes_down"] >= 0 and r["wait_s"] >= 0, r
PY
grep -q "coordinator unreachable" c1.log || fail "c1 never noticed the coordinator restart"
echo "pool sync: 16 overlapped rounds, restarts and kills; every model bit-identical to the coordinator's"
