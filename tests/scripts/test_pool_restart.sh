#!/usr/bin/env bash
# The coordinator is killed (-9) mid-job and restarted on the same port: it
# resumes from the last committed round, no completed round and no accepted
# contribution is lost, the contributors reconnect on their own, and the job
# completes.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
start_pool --heartbeat-timeout 3
cat > job.json <<JSON
{"name": "restart", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 2},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 3, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.9, "rounds": 12, "min_contributors": 2, "max_contributors": 2,
 "round_deadline_s": 30, "compression": "int8"}
JSON
wait_for '"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job.json > submit.log 2>&1' 20
for c in c1 c2; do
  "$MYELIN" contribute --pool "$URL" --token "$TOK" --threads 1 --work-dir wd --exit-when-idle \
    --name $c --debug-step-delay-ms 40 > $c.log 2>&1 &
  PIDS+=($!)
done
C1=${PIDS[1]}; C2=${PIDS[2]}
snapshot() { # FILE: closed rounds (round, val loss) and accepted ledger rows, straight from SQLite
  python3 - "$1" <<'PY'
import sqlite3, sys, json
db = sqlite3.connect("file:st/pool.db?mode=ro", uri=True)
rounds = db.execute("SELECT round, val_loss FROM rounds WHERE status='closed' ORDER BY round").fetchall()
acc = db.execute("SELECT id, round, contributor_id FROM contributions WHERE status IN ('accepted','pending') ORDER BY id").fetchall()
json.dump({"rounds": rounds, "accepted": acc}, open(sys.argv[1], "w"))
PY
}
closed() { python3 -c "import sqlite3; print(sqlite3.connect('file:st/pool.db?mode=ro', uri=True).execute(\"SELECT COUNT(*) FROM rounds WHERE status='closed'\").fetchone()[0])"; }
wait_for '[ "$(closed)" -ge 4 ]' 60
kill -9 $SERVER
echo "killed the coordinator (-9) after $(closed) closed rounds"
snapshot before.json
sleep 1
# Contributors keep retrying meanwhile; restart on the same port.
"$MYELIN" pool serve --listen 127.0.0.1:$PORT --state-dir st --heartbeat-timeout 3 >> serve.log 2>&1 &
SERVER=$!; PIDS+=($SERVER)
for p in $C1 $C2; do
  end=$((SECONDS + 90))
  while kill -0 $p 2>/dev/null; do [ $SECONDS -lt $end ] || { tail serve.log; fail "contributor $p did not finish"; }; sleep 0.2; done
  wait $p || fail "contributor $p exited non-zero"
done
snapshot after.json
python3 - <<'PY' || fail "state lost across the coordinator restart"
import json
b, a = json.load(open("before.json")), json.load(open("after.json"))
assert len(a["rounds"]) == 12, a["rounds"]
# every round closed before the kill is still closed with the same model loss
assert a["rounds"][:len(b["rounds"])] == b["rounds"], (b["rounds"], a["rounds"][:len(b["rounds"])])
# every contribution recorded before the kill is still there
aa = {tuple(x) for x in a["accepted"]}
assert all(tuple(x) in aa for x in b["accepted"]), "an accepted contribution was lost"
print(f"before the kill: {len(b['rounds'])} rounds closed, {len(b['accepted'])} contributions; "
      f"after: {len(a['rounds'])} rounds, {len(a['accepted'])} contributions")
print(f"held-out loss {a['rounds'][0][1]:.4f} (after round 0) -> {a['rounds'][-1][1]:.4f}")
PY
grep -q "coordinator unreachable" c1.log c2.log || fail "the contributors never noticed the restart"
"$MYELIN" pool status --pool "$URL" --token "$TOK" | head -3
echo "pool restart: coordinator killed -9 and restarted, job resumed and completed"
