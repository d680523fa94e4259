#!/usr/bin/env bash
# The coordinator's status page, loaded in headless Chromium after a short
# job: contributors with hardware and state, the job's rounds, the loss curve
# (inline SVG) and the ledger are on the page, without a token (the page is
# public); a contributor name holding markup is shown escaped; a screenshot
# is taken.
# Skipped (77) when chromium is not installed (scripts/setup.sh installs it).
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
CHROME=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROME" ]; then
  echo "skipped: chromium is not installed (scripts/setup.sh installs it)"
  exit 77
fi
"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
start_pool --heartbeat-timeout 3
cat > job.json <<JSON
{"name": "dash-demo", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 4},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 3, "inner_lr": 3e-3, "outer_lr": 0.7, "outer_momentum": 0.5,
 "rounds": 6, "min_contributors": 2, "max_contributors": 2, "compression": "int8"}
JSON
end=$((SECONDS + 20))
until "$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job.json >/dev/null 2>&1; do
  [ $SECONDS -lt $end ] || fail "submit"; sleep 0.2
done
for c in alice-gpu-box bob-laptop; do
  timeout 60 "$MYELIN" contribute --pool "$URL" --token "$TOK" --name $c --threads 1 --work-dir wd \
    --exit-when-idle > $c.log 2>&1 &
  PIDS+=($!)
done
for p in "${PIDS[@]:1}"; do wait $p || fail "contributor $p failed"; done
# A contributor name with markup is shown as text, never as markup.
curl -s -H "Authorization: Bearer $TOK" -X POST \
  -d '{"name": "<img src=x onerror=alert(1)>evil", "hardware": {}}' "$URL/api/join" > /dev/null

chrome=("$CHROME" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
  --user-data-dir="$WORK/chrome-profile" --virtual-time-budget=8000 --window-size=1280,1800)
# The page is public and read-only: no token, none in the URL.
timeout 90 "${chrome[@]}" --dump-dom "$URL/" > dom.html 2> chrome.log ||
  fail "chromium failed: $(tail -5 chrome.log)"
for want in "Myelin pool" alice-gpu-box bob-laptop dash-demo "6 / 6" done accepted 'id="val-curve"' \
    "<polyline" "cores" "held-out loss"; do
  grep -q -- "$want" dom.html || fail "the rendered page lacks '$want' (see $WORK/dom.html)"
done
rows=$(grep -o '<tr>' dom.html | wc -l)
[ "$rows" -ge 20 ] || fail "only $rows table rows rendered"
grep -q "chain head: row" dom.html || fail "the page lacks the ledger chain head"
grep -q "&lt;img src=x onerror=alert(1)&gt;evil" dom.html || fail "the markup name is not shown escaped"
grep -q "<img" dom.html && fail "a contributor name became markup"
grep -q "myl_" dom.html && fail "the page shows a token"
timeout 90 "${chrome[@]}" --screenshot="$WORK/dashboard.png" "$URL/" 2>> chrome.log ||
  fail "screenshot failed: $(tail -5 chrome.log)"
[ "$(head -c 8 dashboard.png | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "screenshot is not a PNG"
echo "pool dashboard: page rendered in headless chromium ($rows table rows); screenshot $WORK/dashboard.png"
