#!/usr/bin/env bash
# Training data stays with the pool: a contributor that cannot see the
# coordinator's data folder (its own mount namespace, a tmpfs over that
# folder) downloads the job's shard, checks its hash and trains a round that
# is accepted. Between runs a byte of its cached shard is flipped: the next
# run finds the damage by hash and fetches the shard again. A third job on
# the same data, with another contributor name on the same work folder,
# downloads no shard bytes (the cache is shared and content-addressed).
# Resuming an interrupted download is tested in tests/test_pool_shards.cpp.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"

command -v unshare >/dev/null || { echo "skipped: unshare (util-linux) not installed"; exit 77; }
mkdir -p probe
unshare --mount sh -c 'mount -t tmpfs none probe' 2>/dev/null ||
  { echo "skipped: unshare --mount with a tmpfs mount is not permitted here"; exit 77; }

"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
SHARD=$(ls data/addition_train_*.bin)
SHARD_BYTES=$(stat -c %s "$SHARD")
start_pool
submit() { # NAME
  cat > "$1.json" <<JSON
{"name": "$1", "model": {"layers": 1, "heads": 2, "channels": 32, "vocab": 256, "max_seq_len": 32, "seed": 1},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 2, "inner_lr": 3e-3, "rounds": 1,
 "min_contributors": 1, "max_contributors": 1, "round_deadline_s": 30, "val_batches": 2}
JSON
  "$MYELIN" pool submit --pool "$URL" --token "$ADMIN" "$1.json" > "submit_$1.log" 2>&1 ||
    fail "submit $1: $(cat "submit_$1.log")"
}
# contribute NAME LOG STATS: one contributor run in its own mount namespace
# where the coordinator's data folder is an empty tmpfs.
contribute() {
  MYELIN_POOL_TOKEN=$TOK timeout 60 unshare --mount sh -c '
    mount -t tmpfs none data || exit 3
    echo "data folder as the contributor sees it: $(ls data | wc -l) files"
    exec "$0" contribute --pool "$1" --threads 1 --work-dir wd --exit-when-idle \
      --name "$2" --stats-out "$3"' "$MYELIN" "$URL" "$1" "$3" > "$2" 2>&1 ||
    { show_logs; cat "$2"; fail "contributor $1 failed"; }
  grep -q "sees it: 0 files" "$2" || fail "the data folder was visible to the contributor"
}
shard_bytes() { # STATS: bytes downloaded that were not the model
  python3 -c "import json; s=json.load(open('$1')); print(s['bytes_downloaded'] - s['model_bytes_downloaded'])"
}
round_accepted() { # JOB
  "$MYELIN" pool status --pool "$URL" --token "$TOK" --json > status.json
  python3 -c "
import json; j = [j for j in json.load(open('status.json'))['jobs'] if j['id'] == $1][0]
assert j['status'] == 'done' and j['history'][0]['accepted'] == 1, j" ||
    fail "job $1: round not accepted"
}

# 1. First job: the shard comes over HTTP, hash-checked, into the cache.
submit one
contribute c1 c1.log s1.json
round_accepted 1
grep -q "downloaded shard 0 ($SHARD_BYTES bytes, xxh64 [0-9a-f]\{16\} verified)" c1.log ||
  fail "no verified shard download: $(cat c1.log)"
CACHED=$(ls wd/shards/*.bin)
cmp -s "$CACHED" "$SHARD" || fail "the cached shard differs from the coordinator's"
[ -L wd/*_c1/job_1/train_00000.bin ] || fail "the job folder has no link to the cached shard"
B1=$(shard_bytes s1.json)
[ "$B1" = "$SHARD_BYTES" ] || fail "job 1 fetched $B1 shard bytes, expected $SHARD_BYTES"

# 2. A flipped byte in the cached shard: caught by its hash, fetched again.
python3 - "$CACHED" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(5000); b = f.read(1); f.seek(5000); f.write(bytes([b[0] ^ 0x5a]))
PY
cmp -s "$CACHED" "$SHARD" && fail "the cached shard was not damaged"
submit two
contribute c1 c2.log s2.json
round_accepted 2
grep -q "does not match its hash: deleted, downloading it again" c2.log ||
  fail "the damaged shard was not noticed: $(cat c2.log)"
cmp -s "$CACHED" "$SHARD" || fail "the refetched shard differs from the coordinator's"
B2=$(shard_bytes s2.json)
[ "$B2" = "$SHARD_BYTES" ] || fail "job 2 fetched $B2 shard bytes, expected $SHARD_BYTES"

# 3. A third job on the same data, another contributor name, same work folder.
submit three
contribute c3 c3.log s3.json
round_accepted 3
B3=$(shard_bytes s3.json)
[ "$B3" = 0 ] || fail "job 3 fetched $B3 shard bytes, expected 0 (cached)"
grep -q "downloaded shard" c3.log && fail "job 3 downloaded a shard: $(cat c3.log)"
echo "pool data: shard of $SHARD_BYTES bytes: job 1 fetched $B1 B, job 2 (cache damaged) $B2 B, job 3 (cached) $B3 B"
