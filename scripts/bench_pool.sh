#!/usr/bin/env bash
# The pool against data parallelism, on the same model, the same initial
# weights and the same tokens:
#   (a) mpirun -np N myelin train --dp N   (fp32 gradients all-reduced every step)
#   (b) the pool with N contributors (real coordinator and contributor
#       processes on loopback), H inner steps per round, uploads and the
#       downloaded outer update compressed as int8 (dense) or sparse top-k
#       2-bit with error feedback, H in {10, 30, 100}; and, at H = 30, the
#       one-step-delayed rounds (overlap) against the synchronous ones.
# Every final model is scored by the same evaluator (the same held-out
# batches). Bytes per contributor per inner step are what the coordinator's
# ledger records (bytes_up + bytes_down of every contribution, divided by
# H), the model's first whole download included; fp32 ring all-reduce moves
# 2 (N-1)/N x 4 x params bytes per rank per step. Compute share is each
# contributor's compute seconds over its wall time.
#
#   scripts/bench_pool.sh [--n N] [--steps S] [--out FILE]
# Defaults: N = 2, S = 600, model L2 C96 NH4 (0.25M params), B 8 x T 64 per
# contributor (or rank) per step, inner AdamW lr 1e-3 constant, outer
# Nesterov lr 0.7 momentum 0.9. Needs mpirun for (a). Takes about 10 minutes
# on 2 cores.
set -euo pipefail
N=2 STEPS=600 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
  --n) N=$2; shift 2 ;;
  --steps) STEPS=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  *) echo "bench_pool.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MYELIN=${MYELIN:-$ROOT/build/myelin}
[ -x "$MYELIN" ] || { echo "bench_pool.sh: build first ($MYELIN missing)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "bench_pool.sh: mpirun not on PATH" >&2; exit 2; }
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d)
[ -n "${KEEP:-}" ] && echo "work folder: $W (kept)" >&2
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
cd "$W"
SHAPE=(--layers 2 --heads 4 --channels 96 --vocab 256 --max-seq-len 64)
B=8 T=64 LR=1e-3
"$MYELIN" data synthetic --out data --examples 40000 --seed 5 >/dev/null
# One initial model for every run.
"$MYELIN" train "${SHAPE[@]}" --seed 7 --train-data 'data/addition_train_*.bin' -b 1 -t $T \
  --steps 1 --lr 1e-30 --save init.bin --log-every 1000 >/dev/null
# Held-out loss of a model file: a one-step run at lr 1e-30 (no weight moves
# at fp32 precision) that validates after its step.
evaluate() { # MODEL -> held-out loss
  rm -f eval.jsonl
  "$MYELIN" train --model "$1" --train-data "$W/data/addition_train_*.bin" \
    --val-data "$W/data/addition_val_*.bin" -b $B -t $T --steps 1 --lr 1e-30 --val-every 1 \
    --val-batches 32 --metrics-out eval.jsonl --log-every 1000 >/dev/null
  python3 -c "import json; print([json.loads(l) for l in open('eval.jsonl')][-1]['val_loss'])"
}

echo "data parallel: mpirun -np $N, $STEPS steps" >&2
t0=$(date +%s.%N)
mpirun -np $N "$MYELIN" train --dp $N --model init.bin --train-data 'data/addition_train_*.bin' \
  -b $B -t $T --steps $STEPS --lr $LR --lr-schedule constant --threads 1 --save dp.bin \
  --log-every 1000 >dp.log 2>&1
t1=$(date +%s.%N)
PARAMS=$(python3 -c "import os; print((os.path.getsize('init.bin') - 1024) // 4)")
echo "{\"run\": \"dp\", \"val_loss\": $(evaluate dp.bin), \"wall_s\": $(python3 -c "print($t1 - $t0)"), \"params\": $PARAMS}" >results.jsonl

pool_run() { # NAME H CODEC_JSON OVERLAP
  local name=$1 H=$2 codec=$3 overlap=$4 d=$W/$1
  mkdir -p "$d" && cd "$d"
  local admin tok
  admin=$("$MYELIN" pool token create --state-dir st --name admin --admin)
  tok=$("$MYELIN" pool token create --state-dir st --name v)
  "$MYELIN" pool serve --listen 127.0.0.1:0 --state-dir st --quiet >serve.log 2>&1 &
  local server=$!
  PIDS+=($server)
  until [ -s st/port ]; do sleep 0.1; done
  local url=http://127.0.0.1:$(cat st/port)
  cat >job.json <<JSON
{"name": "$name", "init_checkpoint": "$W/init.bin",
 "train_data": "$W/data/addition_train_*.bin", "val_data": "$W/data/addition_val_*.bin",
 "batch_size": $B, "seq_len": $T, "inner_steps": $H, "inner_lr": $LR, "lr_schedule": "constant",
 "outer_lr": ${OUTER_LR:-0.7}, "outer_momentum": ${OUTER_MOMENTUM:-0.9}, "rounds": $((STEPS / H)),
 "min_contributors": $N, "max_contributors": $N, "round_deadline_s": 600, $codec,
 "keep_snapshots": 2, "overlap": $overlap}
JSON
  "$MYELIN" pool submit --pool "$url" --token "$admin" job.json >submit.log 2>&1 ||
    { cat submit.log >&2; exit 1; }
  local cs=()
  for k in $(seq 1 $N); do
    "$MYELIN" contribute --pool "$url" --token "$tok" --name c$k --threads 1 --work-dir wd \
      --exit-when-idle --quiet --stats-out stats$k.json >c$k.log 2>&1 &
    cs+=($!)
  done
  for p in "${cs[@]}"; do wait "$p"; done
  "$MYELIN" pool ledger --pool "$url" --token "$tok" --format json >ledger.json
  kill "$server"; wait "$server" 2>/dev/null || true
  local final
  final=$(ls st/jobs/1/model_*.bin | sort | tail -1)
  python3 - "$name" "$H" "$(evaluate "$final")" "$N" >>"$W/results.jsonl" <<'PY'
import json, sys
name, H, loss, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
led = json.load(open("ledger.json"))
acc = [r for r in led if r["status"] == "accepted"]
up = sum(r["bytes_up"] for r in led) / n
down = sum(r["bytes_down"] for r in led) / n
steps = len(acc) * H / n
stats = [json.load(open(f"stats{k}.json")) for k in range(1, n + 1)]
share = sum(s["compute_s"] for s in stats) / sum(s["wall_s"] for s in stats)
print(json.dumps({"run": name, "H": H, "val_loss": loss, "accepted": len(acc), "uploads": len(led),
                  "up_per_step": up / steps, "down_per_step": down / steps,
                  "compute_share": share}))
PY
  cd "$W"
}

INT8='"compression": "int8"'
SPARSE='"compression": "sparse", "topk_density": 0.016, "value_bits": 2, "chunk_size": 4096, "error_feedback": true'
for H in ${BENCH_POOL_H:-10 30 100}; do
  echo "pool: H=$H int8" >&2
  pool_run int8_h$H $H "$INT8" false
  echo "pool: H=$H sparse" >&2
  pool_run sparse_h$H $H "$SPARSE" false
done
echo "pool: H=30 overlap" >&2
pool_run int8_h30_overlap 30 "$INT8" true
pool_run sparse_h30_overlap 30 "$SPARSE" true

python3 - "$N" <<'PY' | tee "${OUT:-/dev/null}"
import json, sys
n = int(sys.argv[1])
rows = [json.loads(l) for l in open("results.jsonl")]
dp = rows[0]
ring = 2 * (n - 1) / n * 4 * dp["params"]
print(f"N = {n}, {dp['params']} parameters; fp32 ring all-reduce: {ring:.0f} B per rank per step\n")
print("| run | H | held-out loss | vs DP | bytes/step up + down | x fewer than fp32 DP | compute share |")
print("|---|---|---|---|---|---|---|")
print(f"| data parallel (mpirun -np {n}) | 1 | {dp['val_loss']:.4f} | | {ring:.0f} | 1 | |")
for r in rows[1:]:
    b = r["up_per_step"] + r["down_per_step"]
    print(f"| {r['run']} | {r['H']} | {r['val_loss']:.4f} | {100 * (r['val_loss'] / dp['val_loss'] - 1):+.1f}% "
          f"| {r['up_per_step']:.0f} + {r['down_per_step']:.0f} | {ring / b:.0f} | {100 * r['compute_share']:.0f}% |")
PY
