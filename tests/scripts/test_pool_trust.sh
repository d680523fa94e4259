#!/usr/bin/env bash
# Trust and access: uploads with NaNs or a 100x pseudo-gradient are rejected
# and recorded with the reason; a truncated upload is refused (4xx) and
# changes nothing; requests without a valid token, non-admin submissions,
# malformed and oversized bodies get a 4xx answer and change nothing.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
start_pool --heartbeat-timeout 3 --max-upload-mb 1
wait_for '[ "$(code "$URL/api/status")" = 200 ]' 20
cat > job.json <<JSON
{"name": "trust", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 3},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 2, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.0, "rounds": 3, "min_contributors": 3, "max_contributors": 4,
 "round_deadline_s": 30, "compression": "int8"}
JSON

# ---- access ----
[ "$(code -X POST -d '{"contributor_id": 1}' "$URL/api/work")" = 401 ] || fail "no token: expected 401"
[ "$(code -H "Authorization: Bearer myl_nope" "$URL/api/status")" = 401 ] || fail "bad token: expected 401"
[ "$(code -H "Authorization: Bearer $TOK" -X POST --data-binary @job.json "$URL/api/jobs")" = 403 ] ||
  fail "non-admin submit: expected 403"
set +e
"$MYELIN" pool submit --pool "$URL" --token "$TOK" job.json > nonadmin.log 2>&1; rc=$?
set -e
[ $rc = 2 ] || fail "non-admin 'pool submit' exited $rc (expected 2)"
[ "$(code -H "Authorization: Bearer $ADMIN" -X POST --data-binary '{"name": ' "$URL/api/jobs")" = 400 ] ||
  fail "malformed JSON: expected 400"
[ "$(code -H "Authorization: Bearer $ADMIN" -X POST --data-binary '{"rounds": 0}' "$URL/api/jobs")" = 400 ] ||
  fail "invalid job: expected 400"
# Job fields are strictly typed and bounded: `pool submit` exits 2 naming the field.
for bad in '"batch_size": true' '"batch_size": 4294967297' '"inner_steps": 2.5' '"model": {"vocab": 2147483647}'; do
  field=$(echo "$bad" | sed -E 's/"([a-z_]+)".*/\1/')
  [ "$field" = model ] && field=model.vocab
  python3 -c "import json,sys; j=json.load(open('job.json')); j.update(json.loads('{'+sys.argv[1]+'}')); json.dump(j, open('typed.json','w'))" "$bad"
  set +e
  "$MYELIN" pool submit --pool "$URL" --token "$ADMIN" typed.json > typed.log 2>&1; rc=$?
  set -e
  [ $rc = 2 ] && grep -q "job.$field" typed.log || fail "job with $bad: exit $rc, $(cat typed.log)"
done
head -c 200000 /dev/zero | tr '\0' ' ' > big.json
[ "$(code -H "Authorization: Bearer $ADMIN" -X POST --data-binary @big.json "$URL/api/jobs")" = 413 ] ||
  fail "oversized JSON: expected 413"
head -c 2000000 /dev/zero > big.bin
c=$(code -H "Authorization: Bearer $TOK" -X POST --data-binary @big.bin "$URL/api/jobs/1/rounds/0/upload?contributor_id=1&tokens=1&compute_s=0")
[ "$c" = 413 ] || fail "oversized upload: expected 413, got $c"
jobs=$(python3 -c "import sqlite3; print(sqlite3.connect('st/pool.db').execute('SELECT COUNT(*) FROM jobs').fetchone()[0])")
[ "$jobs" = 0 ] || fail "refused requests created $jobs jobs"
"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job.json | grep -q "submitted job 1" || fail "admin submit"

# ---- contributions ----
common=(--pool "$URL" --token "$TOK" --threads 1 --work-dir wd --exit-when-idle)
# The two contributors whose uploads are refused join first: a round closes
# once enough valid uploads are in and no assigned live contributor is still
# training, so on a loaded machine a late "nan" could otherwise miss round 0.
ncontrib() { python3 -c "import sqlite3; print(sqlite3.connect('st/pool.db').execute('SELECT COUNT(*) FROM contributors').fetchone()[0])"; }
"$MYELIN" contribute "${common[@]}" --name nan --debug-corrupt nan > nan.log 2>&1 & PIDS+=($!)
"$MYELIN" contribute "${common[@]}" --name big --debug-corrupt scale100 > big.log 2>&1 & PIDS+=($!)
wait_for '[ "$(ncontrib)" -ge 2 ]' 30
"$MYELIN" contribute "${common[@]}" --name good > good.log 2>&1 & PIDS+=($!)
"$MYELIN" contribute "${common[@]}" --name trunc --debug-corrupt truncate > trunc.log 2>&1 & PIDS+=($!)
for p in "${PIDS[@]:1}"; do
  end=$((SECONDS + 60))
  while kill -0 $p 2>/dev/null; do [ $SECONDS -lt $end ] || { tail serve.log; fail "contributor $p did not finish"; }; sleep 0.2; done
  wait $p || fail "contributor $p exited non-zero"
done
grep -q "truncated upload refused: HTTP 400" trunc.log || fail "truncated upload not refused: $(cat trunc.log)"
# garbage and a wrong-shape body for an open round: 400, nothing recorded
"$MYELIN" pool ledger --pool "$URL" --token "$TOK" --format json > ledger.json
"$MYELIN" pool ledger --pool "$URL" --token "$TOK" --format csv > ledger.csv
python3 - <<'PY' || { cat ledger.csv; fail "ledger checks failed"; }
import json
led = json.load(open("ledger.json"))
by = {}
for r in led: by.setdefault(r["contributor"], []).append(r)
assert len(led) == 12, f"expected 3 rounds x 4 contributors = 12 rows, got {len(led)}"
assert all(r["status"] == "accepted" for r in by["good"] + by["trunc"]), "honest uploads rejected"
assert len(by["trunc"]) == 3, "the truncated upload left a trace in the ledger"
for r in by["nan"]:
    assert r["status"] == "rejected" and "non-finite" in r["reason"], r
for r in by["big"]:
    assert r["status"] == "rejected" and "exceeds" in r["reason"] and "median" in r["reason"], r
print("rejected:", by["nan"][0]["reason"], "|", by["big"][0]["reason"])
PY
grep -q "non-finite" ledger.csv || fail "CSV ledger lacks the reasons"
python3 - <<'PY' || fail "status checks failed"
import sqlite3
db = sqlite3.connect("st/pool.db")
r = db.execute("SELECT accepted FROM rounds WHERE job_id=1 ORDER BY round").fetchall()
assert r == [(2,)] * 3, r
PY
rows() { python3 -c "import sqlite3; d=sqlite3.connect('st/pool.db'); print(d.execute('SELECT COUNT(*), COALESCE(SUM(status=\\'accepted\\'),0) FROM contributions').fetchone(), d.execute('SELECT COUNT(*) FROM rounds').fetchone())"; }
before=$(rows)
[ "$(code -H "Authorization: Bearer $TOK" -X POST --data-binary 'garbage' "$URL/api/jobs/1/rounds/2/upload?contributor_id=1&tokens=10&compute_s=1")" = 400 ] ||
  fail "garbage upload: expected 400"
[ "$(code -H "Authorization: Bearer $TOK" -X POST -d '{"contributor_id": "x"}' "$URL/api/work")" = 400 ] ||
  fail "bad field type: expected 400"
[ "$(code -H "Authorization: Bearer $ADMIN" -X POST -d '{"contributor_id": 1, "state": "idle"}' "$URL/api/heartbeat")" = 403 ] ||
  fail "another token's contributor: expected 403"
[ "$(rows)" = "$before" ] || fail "refused requests changed the state: $before -> $(rows)"
echo "pool trust: NaN and 100x uploads rejected and recorded; truncated, malformed, oversized and unauthorised requests refused"
