#!/usr/bin/env bash
# No stalls. (1) Two phantom contributors take slots and only heartbeat:
# every round still closes at its deadline with the two honest uploads
# accepted. (2) With 50 idle connections and 10 that send one byte every 2 s
# open, a status request still answers in < 1 s (latencies printed). (3) A
# JSON route refuses a 400 MB Content-Length with 413 at once, without
# reading the body (the coordinator's memory does not grow).
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
"$MYELIN" data synthetic --out data --examples 2000 --seed 7 >/dev/null
start_pool --heartbeat-timeout 4
DEADLINE=6
cat > job.json <<JSON
{"name": "stall", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 3},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 2, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.0, "rounds": 3, "min_contributors": 3, "max_contributors": 4,
 "round_deadline_s": $DEADLINE, "compression": "int8"}
JSON
"$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job.json 2>/dev/null | grep -q "submitted job 1" || fail "submit"

# ---- (1) phantoms: join, take a slot every round, heartbeat, never upload ----
cat > phantom.py <<'PY'
import json, sys, time, urllib.request
url, tok, name = sys.argv[1:4]
def post(path, body):
    r = urllib.request.Request(url + path, json.dumps(body).encode(),
                               {"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r, timeout=5))
cid = post("/api/join", {"name": name, "hardware": {"device": "cpu"}})["contributor_id"]
while True:
    w = post("/api/work", {"contributor_id": cid})
    post("/api/heartbeat", {"contributor_id": cid, "state": "training"})
    time.sleep(0.5)
PY
for n in phantom1 phantom2; do
  python3 phantom.py "$URL" "$TOK" $n > $n.log 2>&1 &
  PIDS+=($!)
done
sleep 1
for n in honest1 honest2; do
  "$MYELIN" contribute --pool "$URL" --token "$TOK" --name $n --threads 1 --work-dir wd --exit-when-idle \
    > c_$n.log 2>&1 &
  HONEST+=($!)
  PIDS+=($!)
done
for p in "${HONEST[@]}"; do
  end=$((SECONDS + 90))
  while kill -0 $p 2>/dev/null; do [ $SECONDS -lt $end ] || { show_logs; fail "honest contributor $p did not finish"; }; sleep 0.2; done
  wait $p || { show_logs; fail "honest contributor $p failed"; }
done
python3 - "$DEADLINE" <<'PY' || { show_logs; fail "phantom stall checks failed"; }
import sqlite3, sys
deadline = float(sys.argv[1])
db = sqlite3.connect("st/pool.db")
job = db.execute("SELECT status, round FROM jobs WHERE id = 1").fetchone()
assert job == ("done", 3), job
rounds = db.execute("SELECT round, closed - opened, accepted, rejected FROM rounds WHERE job_id = 1 ORDER BY round").fetchall()
for r, secs, acc, rej in rounds:
    print(f"round {r}: closed after {secs:.2f} s (deadline {deadline:.0f} s), {acc} accepted, {rej} rejected")
    assert acc == 2 and rej == 0, (r, acc, rej)
    assert secs < deadline + 3, f"round {r} held open {secs:.2f} s past a {deadline} s deadline"
rows = db.execute("SELECT c.name, x.status FROM contributions x JOIN contributors c ON c.id = x.contributor_id").fetchall()
assert all(n.startswith("honest") and s == "accepted" for n, s in rows), rows
assert len(rows) == 6, rows
PY
for p in "${PIDS[@]:1}"; do kill $p 2>/dev/null || true; done

# ---- (2) idle and slow connections; (3) body limit ----
python3 - "$PORT" "$SERVER" "$TOK" <<'PY' || { tail -20 serve.log; fail "slow-client or body-limit checks failed"; }
import socket, statistics, sys, threading, time
port, pid = int(sys.argv[1]), sys.argv[2]
def status_latency():
    t0 = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b: break
        data += b
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:80]
    return time.time() - t0
base = [status_latency() for _ in range(10)]
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
stop = False
def dribble():
    msg = b"GET /api/status HTTP/1.1\r\nHost: x\r\n"
    i = 0
    while not stop:
        for s in slow:
            try: s.send(msg[i % len(msg):i % len(msg) + 1])
            except OSError: pass
        i += 1
        time.sleep(2)
t = threading.Thread(target=dribble, daemon=True); t.start()
time.sleep(0.5)
lat = []
end = time.time() + 6
while time.time() < end:
    lat.append(status_latency())
    time.sleep(0.2)
stop = True
print(f"status latency alone: median {1000*statistics.median(base):.1f} ms, max {1000*max(base):.1f} ms")
print(f"with 50 idle + 10 slow connections open: {len(lat)} requests, median {1000*statistics.median(lat):.1f} ms, "
      f"max {1000*max(lat):.1f} ms")
assert max(lat) < 1.0, lat
for s in idle + slow: s.close()

def rss_kb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
before = rss_kb()
for path in ("/api/join", "/api/jobs/1/rounds/2/upload?contributor_id=1&tokens=1&compute_s=1"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.time()
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {sys.argv[3]}\r\n"
              "Content-Type: application/json\r\nContent-Length: 400000000\r\n\r\n".encode())
    s.sendall(b"{" * 65536)  # the start of the body; the rest never comes
    data = s.recv(4096)
    dt = time.time() - t0
    s.close()
    line = data.split(b"\r\n")[0].decode()
    print(f"POST {path.split('?')[0]} with Content-Length 400 MB: {line} in {1000*dt:.1f} ms")
    assert data.startswith(b"HTTP/1.1 413"), data[:100]
    assert dt < 1.0
after = rss_kb()
print(f"coordinator RSS {before} kB -> {after} kB")
assert after - before < 50000, (before, after)
PY
echo "pool stall: rounds close at their deadline despite phantoms; status < 1 s beside 50 idle + 10 slow connections; 400 MB bodies refused unread"
