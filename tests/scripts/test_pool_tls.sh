#!/usr/bin/env bash
# The pool over HTTPS: a coordinator with a throwaway self-signed certificate
# for 127.0.0.1/localhost; submit, status, ledger and one contributor trust it
# through --ca-cert and finish a 2-round job. A client without the certificate
# and plain http to the TLS port are refused. Loopback only.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
command -v openssl >/dev/null || { echo "SKIP: no openssl command"; exit 77; }

# Self-signed certificate (it is its own CA) valid for 127.0.0.1 and localhost.
cat > cert.cnf <<'EOF'
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = 127.0.0.1
[ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
EOF
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout key.pem -out cert.pem \
  -config cert.cnf > openssl.log 2>&1 || fail "openssl: $(cat openssl.log)"

"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
ADMIN=$("$MYELIN" pool token create --state-dir st --name admin --admin)
"$MYELIN" pool serve --listen 127.0.0.1:0 --state-dir st --tls-cert cert.pem --tls-key key.pem \
  > serve.log 2>&1 &
PIDS+=($!)
wait_for '[ -s st/port ]' 20
PORT=$(cat st/port)
URL=https://127.0.0.1:$PORT
TLS=(--pool "$URL" --token "$ADMIN" --ca-cert cert.pem)
wait_for 'grep -q "serving https://" serve.log' 10

# A 2-round job, submitted over https.
python3 - "$(dirname "$0")/fixtures/pool_equivalence_job.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
j.update(name="tls", rounds=2)
json.dump(j, open("job.json", "w"))
PY
wait_for '"$MYELIN" pool submit "${TLS[@]}" job.json > submit.log 2>&1' 10
grep -q "submitted job" submit.log || fail "submit: $(cat submit.log)"

# Without the certificate: refused, and the message says why.
if timeout 15 "$MYELIN" pool status --pool "$URL" --token "$ADMIN" > noca.log 2>&1; then
  fail "status without --ca-cert succeeded against a self-signed pool"
fi
grep -Eiq "certif|ssl|tls" noca.log || fail "no certificate/TLS reason: $(cat noca.log)"
if timeout 15 "$MYELIN" contribute --pool "$URL" --token "$ADMIN" --name noca --threads 1 \
  --work-dir wd-noca --give-up-s 1 --exit-when-idle > c-noca.log 2>&1; then
  fail "contributor without --ca-cert succeeded"
fi
grep -Eiq "certif|ssl|tls" c-noca.log || fail "no certificate/TLS reason: $(cat c-noca.log)"

# Plain http to the TLS port fails (the server wants a TLS handshake).
if timeout 15 "$MYELIN" pool status --pool "http://127.0.0.1:$PORT" --token "$ADMIN" \
  > plain.log 2>&1; then
  fail "plain http to the TLS port succeeded: $(cat plain.log)"
fi

# One contributor over https with --ca-cert finishes the job.
timeout 20 "$MYELIN" contribute "${TLS[@]}" --name solo --threads 1 --work-dir wd \
  --exit-when-idle > c-solo.log 2>&1 || { show_logs; fail "contributor over https failed"; }

"$MYELIN" pool status "${TLS[@]}" --json > status.json || fail "status over https"
"$MYELIN" pool status --pool "https://localhost:$PORT" --token "$ADMIN" --ca-cert cert.pem \
  > /dev/null || fail "status over https://localhost (DNS subjectAltName)"
"$MYELIN" pool ledger "${TLS[@]}" --format json > ledger.json || fail "ledger over https"
python3 - <<'PY' || { show_logs; fail "status/ledger checks failed"; }
import json
st = json.load(open("status.json"))
job = st["jobs"][0]
assert job["status"] == "done" and job["round"] == 2, job
led = json.load(open("ledger.json"))
acc = [r for r in led if r["status"] == "accepted" and r["contributor"] == "solo"]
assert len(acc) == 2, led
PY
[ -f st/jobs/1/model_000002.bin ] || fail "no global model after round 2"
echo "pool tls: submit/status/ledger/contribute over https with --ca-cert; no CA and plain http refused"
