#!/usr/bin/env bash
# The benchmarks run and report what they promise: CPU kernels, GPT-2 and
# Llama blocks (time, GB/s, GFLOP/s, share of the limit, --kv-heads), collectives under mpirun (algorithm and bus
# bandwidth, values checked), and the pipeline bubble beside its theory.
source "$(dirname "$0")/common.sh" "$@"
"$MYELIN" bench --device cpu --reps 2 --batch 2 --seq 64 --channels 64 --heads 2 \
  --filter 'gelu|matmul_qkv|attention' --output kernels.json > kernels.txt
cat kernels.txt
for k in gelu_fwd gelu_bwd matmul_qkv_fwd attention_fwd attention_bwd; do
  grep -q "^$k " kernels.txt || fail "cpu bench lacks $k"
done
grep -q '"kernel":"attention_bwd"' kernels.json || fail "json output lacks attention_bwd"
# The Llama-block kernels: grouped-query attention with --kv-heads, RoPE, SwiGLU
# of --intermediate, RMSNorm; every row in the table's format, every kernel in
# the JSON with its bytes, and the kv heads reach the byte count.
llama_bench() { # $1: kv heads, $2: output stem
  "$MYELIN" bench --device cpu --reps 2 --batch 2 --seq 64 --channels 64 --heads 4 \
    --kv-heads "$1" --intermediate 96 --filter 'gqa|rmsnorm|rope|swiglu' --output "$2.json" > "$2.txt"
}
llama_bench 1 llama1
llama_bench 2 llama2
cat llama1.txt
grep -q '| llama NKV=1 I=96$' llama1.txt || fail "cpu bench header lacks the Llama shape"
llama_kernels="gqa_attention_fwd gqa_attention_bwd rmsnorm_fwd rmsnorm_bwd rope_fwd rope_bwd swiglu_fwd swiglu_bwd"
for k in $llama_kernels; do
  grep -Eq "^$k +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+% +(memory|compute)$" llama1.txt ||
    fail "cpu bench row of $k missing or malformed"
  grep -Eq "\"kernel\":\"$k\",\"median_ms\":[0-9.]+,\"bytes\":[0-9.e+]+,\"flops\":[0-9.e+]+,.*\"share\":[0-9.]+,\"bound\":\"(memory|compute)\"" llama1.json ||
    fail "json output lacks $k or its fields"
done
bytes() { grep -o "\"kernel\":\"$1\",\"median_ms\":[0-9.]*,\"bytes\":[0-9.e+]*" "$2" | sed 's/.*"bytes"://'; }
# N = 128 rows, D = 16: one more kv head adds 2 x 128 x 16 qkv floats (8 KiB) to
# each read of qkv: forward reads it once, backward reads and writes it.
d_fwd=$(awk -v a="$(bytes gqa_attention_fwd llama1.json)" -v b="$(bytes gqa_attention_fwd llama2.json)" 'BEGIN { print b - a }')
d_bwd=$(awk -v a="$(bytes gqa_attention_bwd llama1.json)" -v b="$(bytes gqa_attention_bwd llama2.json)" 'BEGIN { print b - a }')
[ "$d_fwd" = 16384 ] && [ "$d_bwd" = 32768 ] || fail "--kv-heads 1 -> 2 changed gqa bytes by $d_fwd / $d_bwd"
[ "$(bytes rmsnorm_fwd llama1.json)" = "$(bytes rmsnorm_fwd llama2.json)" ] || fail "--kv-heads changed rmsnorm bytes"
expect2 --kv-heads bench --device cpu --heads 4 --kv-heads 3
expect2 --kv-heads bench --device cpu --heads 4 --kv-heads 8
expect2 --intermediate bench --device cpu --intermediate -1
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
