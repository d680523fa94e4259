#!/usr/bin/env bash
# The same job twice through a real coordinator and 2 contributors: uploads
# and the downloaded outer update as int8 (dense), then as sparse top-k
# (density 0.016, 4-bit values, chunks of 4096, error feedback), default
# trust settings. Checked: at least 90% of uploads accepted in each run;
# the sparse run's held-out loss, the mean of the last 4 rounds, is within
# 10% of the int8 run's (measured 4.8% with g++ and 8.9% with the clang
# sanitizer build, each the same run to run: the rounding of the two
# compilers gives two trajectories, and the last round alone ranged 4.7% to
# 13.7%), and after the first round (the whole-model download) a sparse
# contribution moves at most 3% of the fp32 model's bytes, up and down
# together.
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/pool_common.sh"
"$MYELIN" data synthetic --out data --examples 4000 --seed 3 >/dev/null
start_pool --heartbeat-timeout 3
run() { # NAME CODEC_JSON -> job id
  cat > job_$1.json <<JSON
{"name": "$1", "model": {"layers": 2, "heads": 2, "channels": 64, "vocab": 256, "max_seq_len": 32, "seed": 5},
 "train_data": "data/addition_train_*.bin", "val_data": "data/addition_val_*.bin",
 "batch_size": 4, "seq_len": 32, "inner_steps": 5, "inner_lr": 3e-3,
 "outer_lr": 0.7, "outer_momentum": 0.9, "rounds": 32, "min_contributors": 2, "max_contributors": 2,
 "round_deadline_s": 60, $2, "val_batches": 8}
JSON
  "$MYELIN" pool submit --pool "$URL" --token "$ADMIN" job_$1.json > submit_$1.log 2>&1 ||
    fail "submit: $(cat submit_$1.log)"
  local cs=()
  for c in c1 c2; do
    "$MYELIN" contribute --pool "$URL" --token "$TOK" --threads 1 --work-dir wd_$1 --exit-when-idle \
      --name $c > ${c}_$1.log 2>&1 &
    cs+=($!); PIDS+=($!)
  done
  for p in "${cs[@]}"; do wait $p || fail "contributor exited $? ($1)"; done
}
run int8 '"compression": "int8"'
run sparse '"compression": "sparse", "topk_density": 0.016, "value_bits": 4, "chunk_size": 4096'
"$MYELIN" pool status --pool "$URL" --token "$TOK" --json > status.json
"$MYELIN" pool ledger --pool "$URL" --token "$TOK" --format json > ledger.json
python3 - <<'PY' || fail "sparse vs int8 criteria not met"
import json, statistics
st = json.load(open("status.json")); led = json.load(open("ledger.json"))
jobs = {j["name"]: j for j in st["jobs"]}
fp32 = 4 * jobs["int8"]["param_count"]
out = {}
for name, j in jobs.items():
    assert j["status"] == "done", j
    rows = [r for r in led if r["job"] == j["id"]]
    rej = [r["reason"] for r in rows if r["status"] != "accepted"]
    # (scoring's rare honest rejection on 2-contributor rounds: see docs/perf.md)
    print(f"{name}: {len(rows) - len(rej)} of {len(rows)} uploads accepted {rej}")
    assert len(rej) <= len(rows) // 10, rej
    later = [r["bytes_up"] + r["bytes_down"] for r in rows if r["round"] > 0]
    last4 = [r["val_loss"] for r in j["history"][-4:]]
    out[name] = (sum(last4) / len(last4), max(later), statistics.median(later))
    print(f"{name}: held-out loss {j['init_val_loss']:.4f} -> {out[name][0]:.4f} (last 4 rounds); per contribution after "
          f"round 0: up+down median {out[name][2]:.0f} B, max {out[name][1]:.0f} B "
          f"({100 * out[name][1] / fp32:.2f}% of fp32 {fp32} B); update {j['history'][-1]['update_bytes']} B")
li, ls = out["int8"][0], out["sparse"][0]
print(f"sparse/int8 held-out loss: {ls / li:.4f}")
assert ls <= 1.10 * li, (ls, li)
assert out["sparse"][1] <= 0.03 * fp32, out["sparse"]
PY
echo "sparse vs int8: held-out loss (last 4 rounds) within 10%, sparse contributions <= 3% of fp32 up+down"
