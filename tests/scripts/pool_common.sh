# Helpers for the pool script tests; source after common.sh. Background
# processes go into PIDS and are killed (with their process groups) on exit;
# wait_for polls a condition with a deadline and shows the logs on timeout.
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 -- "-$p" "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
show_logs() {
  for f in serve.log c*.log; do
    [ -f "$f" ] || continue
    echo "--- $f"
    tail -20 "$f"
  done
}
wait_for() { # CONDITION SECONDS
  local end=$((SECONDS + $2))
  until eval "$1"; do
    [ $SECONDS -lt $end ] || { show_logs; fail "timed out after $2 s waiting for: $1"; }
    sleep 0.1
  done
}
# Creates an admin token (ADMIN) and a volunteer token (TOK) in st/, starts a
# coordinator on a free loopback port with its state there (extra arguments go
# to `pool serve`, its output to serve.log) and sets SERVER, PORT and URL.
start_pool() {
  ADMIN=$("$MYELIN" pool token create --state-dir st --name admin --admin)
  TOK=$("$MYELIN" pool token create --state-dir st --name volunteers)
  "$MYELIN" pool serve --listen 127.0.0.1:0 --state-dir st "$@" > serve.log 2>&1 &
  SERVER=$!
  PIDS+=($SERVER)
  wait_for '[ -s st/port ]' 20
  PORT=$(cat st/port)
  URL=http://127.0.0.1:$PORT
}
