#!/usr/bin/env bash
# Identity, claims and transparency: one token per volunteer; a contributor
# name is bound to its token, and join/heartbeat/work/leave/upload under
# another token's contributor get 403 and change nothing; a revoked token
# gets 401 at once and its contributor is dropped; non-object or mistyped
# hardware, out-of-range compute_s/loss, invalid UTF-8 bodies get 400 (no
# exception text in headers); a Latin-1 token name does not break
# /api/status; status is public (--private requires a token) and shows no
# token; jobs are served FIFO and an admin can cancel one; the ledger's hash
# chain verifies from CSV and JSON exports and an edited row is named.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
sql() { python3 -c "import sqlite3,sys; print(sqlite3.connect('st/pool.db').execute(sys.argv[1]).fetchall())" "$1"; }
"$MYELIN" data synthetic --out data --examples 2000 --seed 5 >/dev/null
start_pool --heartbeat-timeout 5
ALICE=$("$MYELIN" pool token create --state-dir st --name alice)
BOB=$("$MYELIN" pool token create --state-dir st --name bob)
A=(-H "Authorization: Bearer $ALICE")
B=(-H "Authorization: Bearer $BOB")
cat > job.json <<JSON
{"name": "ident", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 3},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 2, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.0, "rounds": 3, "min_contributors": 2, "max_contributors": 3,
 "round_deadline_s": 60, "compression": "int8"}
JSON
echo "$ADMIN" > admin.tok
"$MYELIN" pool submit --pool "$URL" --token-file admin.tok job.json | grep -q "submitted job 1" || fail "submit"

# ---- public status, no tokens shown ----
[ "$(code "$URL/api/status")" = 200 ] || fail "public status: expected 200 without a token"
[ "$(code "$URL/")" = 200 ] || fail "public page: expected 200"
curl -s "$URL/api/status" | grep -q "myl_" && fail "status shows a token"
curl -s "$URL/" | grep -q "innerHTML" && fail "the page writes names through innerHTML"
"$MYELIN" pool status --pool "$URL" > status.txt || fail "pool status without a token"

# ---- name binding and impersonation ----
cid=$(curl -s "${A[@]}" -X POST -d '{"name": "alice-box", "hardware": {"device": "cpu", "cores": 4}}' "$URL/api/join" |
  python3 -c "import json,sys; print(json.load(sys.stdin)['contributor_id'])")
w=$(curl -s "${A[@]}" -X POST -d "{\"contributor_id\": $cid}" "$URL/api/work")
echo "$w" | grep -q '"slot"' || fail "alice got no assignment: $w"
snap() { sql "SELECT c.*, (SELECT COUNT(*) FROM contributions), (SELECT group_concat(contributor_id || ':' || slot) FROM assignments) FROM contributors c ORDER BY id"; }
before=$(snap)
[ "$(code "${B[@]}" -X POST -d '{"name": "alice-box", "hardware": {"device": "cuda"}}' "$URL/api/join")" = 403 ] ||
  fail "join under another token's name: expected 403"
[ "$(code "${B[@]}" -X POST -d "{\"contributor_id\": $cid, \"state\": \"idle\"}" "$URL/api/heartbeat")" = 403 ] ||
  fail "heartbeat for another token's contributor: expected 403"
[ "$(code "${B[@]}" -X POST -d "{\"contributor_id\": $cid}" "$URL/api/work")" = 403 ] ||
  fail "work for another token's contributor: expected 403"
[ "$(code "${B[@]}" -X POST -d "{\"contributor_id\": $cid}" "$URL/api/leave")" = 403 ] ||
  fail "leave for another token's contributor: expected 403"
[ "$(code "${B[@]}" -X POST --data-binary 'x' "$URL/api/jobs/1/rounds/0/upload?contributor_id=$cid&tokens=1&compute_s=0")" = 403 ] ||
  fail "upload in another token's slot: expected 403"
[ "$(snap)" = "$before" ] || fail "refused impersonation changed the state: $before -> $(snap)"

# ---- claims: hardware, compute_s, loss; invalid UTF-8; no exception text ----
for hw in '"gpu-box"' '[1, 2]' '{"cores": 2.5}' '{"cores": "8"}' '{"cores": true}' '{"memory_gb": 1e300}' '{"extra": 1}'; do
  c=$(code "${A[@]}" -X POST -d "{\"name\": \"alice-box\", \"hardware\": $hw}" "$URL/api/join")
  [ "$c" = 400 ] || fail "hardware $hw: expected 400, got $c"
done
for q in "compute_s=1e300" "compute_s=-1" "compute_s=1&loss=1e30" "compute_s=1&loss=-3"; do
  c=$(code "${A[@]}" -X POST --data-binary 'x' "$URL/api/jobs/1/rounds/0/upload?contributor_id=$cid&tokens=1&$q")
  [ "$c" = 400 ] || fail "upload with $q: expected 400, got $c"
done
printf '{"name": "\xff\xfe bad", "hardware": {}}' > bad_utf8.json
curl -s -D hdr.txt -o body.txt "${A[@]}" -X POST --data-binary @bad_utf8.json "$URL/api/join"
head -1 hdr.txt | grep -q " 400" || fail "invalid UTF-8 body: expected 400, got $(head -1 hdr.txt)"
grep -qi "exception" hdr.txt && fail "exception text in the headers: $(cat hdr.txt)"
python3 -c "import json; json.load(open('body.txt'))" || fail "the 400 answer is not JSON"
[ "$(snap)" = "$before" ] || fail "refused claims changed the state"
"$MYELIN" pool status --pool "$URL" > status.txt || fail "pool status after bad hardware"

# A Latin-1 token name (written straight into the database) breaks nothing.
python3 -c "import sqlite3; d=sqlite3.connect('st/pool.db'); d.execute(\"UPDATE tokens SET name = CAST(X'4AE972F46D65' AS TEXT) WHERE name = 'bob'\"); d.commit()"
[ "$(code "$URL/api/status")" = 200 ] || fail "Latin-1 token name broke /api/status"
curl -s "$URL/api/status" | python3 -c "import json,sys; json.load(sys.stdin)" || fail "status is not valid JSON"
set +e
"$MYELIN" pool token create --state-dir st --name $'J\xe9r\xf4me' > /dev/null 2>&1; rc=$?
set -e
[ $rc = 2 ] || fail "token create with a Latin-1 name exited $rc (expected 2)"

# ---- revocation: 401 at once, contributor dropped, slot freed ----
bcid=$(curl -s "${B[@]}" -X POST -d '{"name": "bob-box", "hardware": {}}' "$URL/api/join" |
  python3 -c "import json,sys; print(json.load(sys.stdin)['contributor_id'])")
curl -s "${B[@]}" -X POST -d "{\"contributor_id\": $bcid}" "$URL/api/work" | grep -q '"slot"' || fail "bob got no slot"
"$MYELIN" pool token revoke --state-dir st --id 4 | grep -q "revoked 1" || fail "revoke"
[ "$(code "${B[@]}" -X POST -d "{\"contributor_id\": $bcid, \"state\": \"training\"}" "$URL/api/heartbeat")" = 401 ] ||
  fail "revoked token: expected 401"
[ "$(code "${B[@]}" "$URL/api/status")" = 401 ] || fail "revoked token on a public route: expected 401"
[ "$(sql "SELECT state FROM contributors WHERE id = $bcid")" = "[('left',)]" ] || fail "bob's contributor not dropped"
[ "$(sql "SELECT COUNT(*) FROM assignments WHERE contributor_id = $bcid")" = "[(0,)]" ] || fail "bob's slot not freed"
"$MYELIN" pool token list --state-dir st | grep -q "yes" || fail "token list shows no revoked token"

# ---- FIFO order and cancel ----
sed -e 's/"ident"/"huge"/' -e 's/"rounds": 3/"rounds": 100000/' job.json > huge.json
"$MYELIN" pool submit --pool "$URL" --token-file admin.tok huge.json | grep -q "submitted job 2" || fail "submit job 2"
curl -s "$URL/api/status" | python3 -c "
import json,sys; st=json.load(sys.stdin); q={j['id']: j.get('queue_position') for j in st['jobs']}
assert q == {1: 0, 2: 1}, q" || fail "queue positions"
set +e
"$MYELIN" pool cancel --pool "$URL" --token "$ALICE" 2 > /dev/null 2>&1; rc=$?
set -e
[ $rc = 2 ] || fail "cancel with a volunteer token exited $rc (expected 2)"
"$MYELIN" pool cancel --pool "$URL" --token-file admin.tok 2 | grep -q "cancelled job 2" || fail "cancel"
[ "$(sql "SELECT status FROM jobs WHERE id = 2")" = "[('stopped',)]" ] || fail "job 2 not cancelled"

# ---- a short job, then the ledger chain ----
curl -s "${A[@]}" -X POST -d "{\"contributor_id\": $cid}" "$URL/api/leave" > /dev/null
echo "$ALICE" > alice.tok
for n in alice-box alice-2; do
  MYELIN_POOL_TOKEN=$ALICE "$MYELIN" contribute --pool "$URL" --name $n --threads 1 --work-dir wd \
    --exit-when-idle > c_$n.log 2>&1 &
  PIDS+=($!)
done
for p in "${PIDS[@]:1}"; do wait $p || { show_logs; fail "contributor $p failed"; }; done
"$MYELIN" pool ledger --pool "$URL" --format csv --out ledger.csv
"$MYELIN" pool ledger --pool "$URL" --format json --out ledger.json
"$MYELIN" pool ledger --verify ledger.csv | tee verify.txt
"$MYELIN" pool ledger --verify ledger.json
grep -q "6 sealed rows" verify.txt || fail "expected 6 sealed rows: $(cat verify.txt)"
python3 - <<'PY' || fail "ledger content checks"
import json
led = json.load(open("ledger.json"))
for r in led:
    assert r["status"] == "accepted", r
    assert r["since_assigned_s"] is not None and r["receive_s"] is not None, r
    assert r["compute_s"] <= r["since_assigned_s"] * 1.1 + 5, r
print("ledger rows: claimed compute_s", [round(r["compute_s"], 3) for r in led],
      "| measured held s", [round(r["since_assigned_s"], 3) for r in led])
PY
head=$(curl -s "$URL/api/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['jobs'][0]['ledger_head']['hash'])")
tail -1 ledger.csv | grep -q "$head" || fail "status chain head $head is not the export's last hash"
# Edit one row (row 3's tokens) in each export: verify fails and names it.
python3 - <<'PY'
import csv, json
rows = list(csv.reader(open("ledger.csv")))
i = rows[0].index("tokens"); rows[3][i] = str(int(rows[3][i]) + 1)
csv.writer(open("edited.csv", "w", newline=""), lineterminator="\n").writerows(rows)
led = json.load(open("ledger.json")); led[2]["compute_s"] = 0.5
json.dump(led, open("edited.json", "w"))
del led[1]; json.dump(led, open("dropped.json", "w"))
PY
for f in edited.csv edited.json dropped.json; do
  set +e
  "$MYELIN" pool ledger --verify $f > v_$f.txt 2>&1; rc=$?
  set -e
  [ $rc = 1 ] || fail "verify of $f exited $rc (expected 1)"
  cat v_$f.txt
done
grep -q "row 3 " v_edited.csv.txt || fail "the edited CSV row is not named"
grep -q "row 3 " v_edited.json.txt || fail "the edited JSON row is not named"
grep -q "row 2 " v_dropped.json.txt || fail "the row after a dropped one is not named"

# ---- --private: status, ledger need a token; the page shell does not ----
mkdir -p st2
"$MYELIN" pool serve --listen 127.0.0.1:0 --state-dir st2 --private --max-connections-per-ip 4 \
  > serve2.log 2>&1 &
PIDS+=($!)
wait_for '[ -s st2/port ]' 20
URL2=http://127.0.0.1:$(cat st2/port)
T2=$("$MYELIN" pool token create --state-dir st2 --name carol)
[ "$(code "$URL2/api/status")" = 401 ] || fail "--private: status without a token should be 401"
[ "$(code "$URL2/api/ledger")" = 401 ] || fail "--private: ledger without a token should be 401"
[ "$(code -H "Authorization: Bearer $T2" "$URL2/api/status")" = 200 ] || fail "--private: status with a token"
[ "$(code "$URL2/api/status?token=$T2")" = 401 ] || fail "--private: a token in the URL must not work"
# Over --max-connections-per-ip, a new connection is closed unanswered.
python3 - "$(cat st2/port)" <<'PY' || fail "per-address connection limit"
import socket, sys, time
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
time.sleep(0.3)
s = socket.create_connection(("127.0.0.1", port), timeout=5)
try:
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = s.recv(100)
except OSError:
    got = b""
assert got == b"", got
for h in held: h.close()
time.sleep(0.3)
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
assert s.recv(100).startswith(b"HTTP/1.1 200")
print("5th connection from one address refused; served again once the others closed")
PY
echo "pool identity: impersonation refused (403, state unchanged), revocation 401 at once, claims and UTF-8 checked, FIFO + cancel, ledger chain verified and an edited row named, --private enforced"
