#!/usr/bin/env bash
# A coordinator and 3 CPU contributors (real processes on 127.0.0.1) train a
# tiny model for 12 rounds: the held-out loss falls. One contributor is killed
# (-9) mid-round and another joins late; the job still completes, the dead
# one's slot is reused and the late one's work is accepted. A contributor with
# a wrong token is refused; one interrupted with SIGINT leaves cleanly. Prints bytes sent per round and the compute share;
# after round 1 contributors download only the int8 outer updates (checked).
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
start_pool --heartbeat-timeout 2
cat > job.json <<JSON
{"name": "tiny-3", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 1},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 3, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.5, "rounds": 12, "min_contributors": 2, "max_contributors": 3,
 "round_deadline_s": 30, "compression": "int8", "block_size": 256, "val_batches": 4}
JSON
wait_for '"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job.json > submit.log 2>&1' 20
grep -q "submitted job 1" submit.log || fail "submit: $(cat submit.log)"

# A wrong token is refused (exit 2, nothing joins).
set +e
"$MYELIN" contribute --pool "$URL" --token myl_wrong --name intruder --threads 1 > intruder.log 2>&1
rc=$?
set -e
[ $rc = 2 ] || fail "contributor with a wrong token exited $rc (expected 2): $(cat intruder.log)"
grep -q "refused" intruder.log || fail "no 'refused' message: $(cat intruder.log)"

common=(--pool "$URL" --token "$TOK" --threads 1 --work-dir wd --exit-when-idle)
"$MYELIN" contribute "${common[@]}" --name c1 --debug-step-delay-ms 30 --stats-out stats1.json > c1.log 2>&1 &
PIDS+=($!); C1=$!
"$MYELIN" contribute "${common[@]}" --name c2 --debug-step-delay-ms 30 --stats-out stats2.json > c2.log 2>&1 &
PIDS+=($!); C2=$!
# c3 trains slowly (test-only delay) so that killing it lands mid-round.
"$MYELIN" contribute "${common[@]}" --name c3 --debug-step-delay-ms 200 > c3.log 2>&1 &
PIDS+=($!); C3=$!
wait_for 'grep -q "round 1 .*-> pending" c3.log' 60
sleep 0.3
kill -9 $C3
echo "killed c3 (-9) while it trained its next round"
# The late contributor arrives while c3's slot is still held by the dead
# process: it waits until the heartbeat timeout frees the slot, then takes it.
sleep 0.5
"$MYELIN" contribute "${common[@]}" --name late --debug-step-delay-ms 30 > late.log 2>&1 &
PIDS+=($!); LATE=$!
# Ctrl-C: a contributor that gets SIGINT leaves cleanly (exit 0, state 'left').
"$MYELIN" contribute "${common[@]}" --name quitter --debug-step-delay-ms 30 > quitter.log 2>&1 &
PIDS+=($!); QUIT=$!
wait_for 'grep -q "joined" quitter.log' 30
sleep 0.5
kill -INT $QUIT
wait $QUIT || fail "contributor exited $? after SIGINT (expected 0)"
grep -q "leaving the pool" quitter.log || fail "no clean leave after SIGINT: $(cat quitter.log)"
for p in $C1 $C2 $LATE; do
  end=$((SECONDS + 90))
  while kill -0 $p 2>/dev/null; do [ $SECONDS -lt $end ] || fail "contributor $p did not finish"; sleep 0.2; done
  wait $p || fail "contributor $p exited non-zero"
done

"$MYELIN" pool status --pool "$URL" --token "$TOK"
"$MYELIN" pool status --pool "$URL" --token "$TOK" --json > status.json
"$MYELIN" pool ledger --pool "$URL" --token "$TOK" --format csv --out ledger.csv
"$MYELIN" pool ledger --pool "$URL" --token "$TOK" --format json > ledger.json
python3 - <<'PY' || fail "checks on status/ledger failed"
import json, csv
st = json.load(open("status.json")); job = st["jobs"][0]
assert job["status"] == "done" and job["round"] == 12, job["status"]
hist = job["history"]
assert len(hist) == 12 and all(r["status"] == "closed" for r in hist)
first, last = job["init_val_loss"], hist[-1]["val_loss"]
print(f"held-out loss: {first:.4f} (initial) -> {last:.4f} after 12 rounds")
assert last < first - 0.5, "held-out loss did not fall enough"
led = json.load(open("ledger.json"))
by = {}
for r in led: by.setdefault(r["contributor"], []).append(r)
assert all(r["status"] == "accepted" for r in led), [r for r in led if r["status"] != "accepted"]
assert len(by.get("late", [])) >= 1, "the late contributor has no accepted round"
assert 1 <= len(by["c3"]) < 12, "c3 should have contributed some rounds before it was killed"
states = {c["name"]: c["state"] for c in st["contributors"]}
assert states["quitter"] == "left" and states["c3"] == "lost", states
rows = list(csv.DictReader(open("ledger.csv")))
assert len(rows) == len(led) and rows[0]["status"] == "accepted"
# a round never has two contributors on the same data slice
for rnd in range(12):
    acc = [r for r in led if r["round"] == rnd]
    assert len(acc) <= 3
for f in ("stats1.json", "stats2.json"):
    s = json.load(open(f))
    print(f"{s['name']}: {s['rounds']} rounds, sent {s['bytes_sent']/s['rounds']:.0f} B/round vs "
          f"{s['bytes_uncompressed']/s['rounds']:.0f} B fp32 ({100*(1-s['bytes_sent']/s['bytes_uncompressed']):.1f}% saved), "
          f"compute share {100*s['compute_share']:.1f}%, model downloads {s['model_downloads']}, skipped {s['model_download_skips']}")
    # after its first round a contributor fetches only the outer updates
    # since the round it holds (int8 here), and applies them to the same bits
    # as the coordinator: every upload names the checksum of the model it
    # started from, and all were accepted above.
    ups, fetched, full = s["model_update_downloads"], s["model_bytes_downloaded"], s["model_bytes_full"]
    n = ups + s["model_downloads"]
    print(f"{s['name']}: model reached by {ups} outer updates, {s['model_downloads']} whole downloads: "
          f"{fetched/max(1, s['rounds']):.0f} B/round vs {full/max(1, s['model_downloads'] + s['rounds'] - 1):.0f} B whole "
          f"({100*(1-fetched/full):.1f}% saved)")
    whole = 256 * 4 + 4 * job["param_count"]
    assert s["model_downloads"] == 1 and s["model_update_fallbacks"] == 0, s
    assert ups >= s["rounds"] - 1, s
    assert (fetched - whole) / ups < 0.3 * whole, s
for r in led:
    assert r["bytes_up"] == r["bytes"] > 0 and r["bytes_down"] >= 0 and r["wait_s"] >= 0, r
assert any(r["bytes_down"] > 0 for r in led)
dur = hist[-1]["closed"] - hist[0]["opened"]
print(f"12 rounds in {dur:.1f} s (includes a kill and a {st['heartbeat_timeout_s']} s heartbeat timeout)")
PY
grep -q "SELECT\|error" serve.log && { grep "error" serve.log; fail "errors in the coordinator log"; } || true
echo "pool train: 3 contributors, one killed, one late: job done, held-out loss fell"
