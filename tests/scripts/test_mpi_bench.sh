#!/usr/bin/env bash
# The benchmarks run and report what they promise: CPU kernels (time, GB/s,
# GFLOP/s, share of the limit), collectives under mpirun (algorithm and bus
# bandwidth, values checked), and the pipeline bubble beside its theory.
source "$(dirname "$0")/common.sh" "$@"
"$MYELIN" bench --device cpu --reps 2 --batch 2 --seq 64 --channels 64 --heads 2 \
  --filter 'gelu|matmul_qkv|attention' --output kernels.json > kernels.txt
cat kernels.txt
for k in gelu_fwd gelu_bwd matmul_qkv_fwd attention_fwd attention_bwd; do
  grep -q "^$k " kernels.txt || fail "cpu bench lacks $k"
done
grep -q '"kernel":"attention_bwd"' kernels.json || fail "json output lacks attention_bwd"
command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; exit 77; }
MPI=(mpirun --oversubscribe --bind-to none)
"${MPI[@]}" -np 2 "$MYELIN" bench --comm --max-bytes 1048576 --reps 3 --output comm.csv > comm.txt
grep -q "# all_reduce: best busbw" comm.txt || fail "comm bench summary missing: $(cat comm.txt)"
for op in all_reduce reduce_scatter all_gather sendrecv; do
  [ "$(grep -c "^$op," comm.csv)" -ge 10 ] || fail "comm csv lacks $op rows"
done
awk -F, 'NR > 1 && $11 != 1 { bad = 1 } END { exit bad }' comm.csv || fail "a collective returned wrong values"
"${MPI[@]}" -np 2 "$MYELIN" bench --pipeline --micro-batches 4 --steps 3 > pipe.txt
cat pipe.txt
grep -q "theoretical (M-1)/(K+M-1): 20.0%" pipe.txt || fail "pipeline bench: wrong theory line"
echo "bench: cpu kernels, collectives and pipeline reports present"
