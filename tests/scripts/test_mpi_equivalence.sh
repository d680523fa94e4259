#!/usr/bin/env bash
# Every parallel layout under real mpirun matches the one-process run of the
# same global batch: per-step losses to 1e-5 relative over 10 steps, saved
# models to float rounding (1e-5 of the largest parameter).
source "$(dirname "$0")/common.sh" "$@"
command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; exit 77; }
PY=/usr/bin/python3
CMP="$PY $(dirname "$0")/compare_runs.py"
MPI=(mpirun --oversubscribe --bind-to none)
"$MYELIN" data synthetic --out data --examples 3000 --seed 2 >/dev/null
C=(--train-data data/addition_train_000.bin --layers 4 --channels 32 --heads 2 --max-seq-len 32
  --seq-len 32 --steps 10 --lr 1e-3 --warmup-steps 2 --grad-clip 1 --weight-decay 0.1 --quiet
  --threads 1)
# Global batch: 8 rows of 32 tokens per step.
"$MYELIN" train "${C[@]}" --batch-size 2 --grad-accum 4 --metrics-out one.jsonl --save one.bin
"$MYELIN" train "${C[@]}" --batch-size 1 --grad-accum 8 --metrics-out one_b1.jsonl --save one_b1.bin
run() { # run NAME NP ARGS...
  local name=$1 np=$2
  shift 2
  "${MPI[@]}" -np "$np" "$MYELIN" train "${C[@]}" "$@" --metrics-out "$name.jsonl" --save "$name.bin"
  $CMP one.jsonl "$name.jsonl" 1e-5 one.bin "$name.bin" > "$name.cmp" || { cat "$name.cmp"; fail "$name"; }
  cat "$name.cmp"
}
run dp2 2 --dp 2 --batch-size 1 --grad-accum 4
run dp2_zero1 2 --dp 2 --zero 1 --batch-size 1 --grad-accum 4
run pp2_gpipe 2 --pp 2 --pp-schedule gpipe --batch-size 2 --grad-accum 4
run pp2_1f1b 2 --pp 2 --pp-schedule 1f1b --batch-size 2 --grad-accum 4
run pp4_m8 4 --pp 4 --batch-size 1 --grad-accum 8
run pp2_uneven 2 --pp 2 --pp-layers 3,1 --batch-size 2 --grad-accum 4
run dp2_pp2 4 --dp 2 --pp 2 --batch-size 1 --grad-accum 4
run dp2_pp2_zero1 4 --dp 2 --pp 2 --zero 1 --batch-size 1 --grad-accum 4
$CMP one.jsonl one_b1.jsonl 1e-5 one.bin one_b1.bin
# ZeRO-1 over 3 ranks, whose state does not split into 3 equal chunks (the
# engine pads it): the same run as plain data parallelism over 3 ranks.
# (Against one process, averaging over 3 rounds differently: checked at dp 2.)
"${MPI[@]}" -np 3 "$MYELIN" train "${C[@]}" --dp 3 --batch-size 1 --grad-accum 2 \
  --metrics-out dp3.jsonl --save dp3.bin
"${MPI[@]}" -np 3 "$MYELIN" train "${C[@]}" --dp 3 --zero 1 --batch-size 1 --grad-accum 2 \
  --metrics-out dp3_zero1.jsonl --save dp3_zero1.bin
$CMP dp3.jsonl dp3_zero1.jsonl 1e-6 dp3.bin dp3_zero1.bin || fail "dp3 x zero1 differs from dp3"
# Resume in a DP x PP layout with ZeRO continues exactly: checkpoints at 5 and
# 10; dropping step 10 leaves what a run stopped after step 5 leaves.
L=(--dp 2 --pp 2 --zero 1 --batch-size 1 --grad-accum 4 --shuffle)
"${MPI[@]}" -np 4 "$MYELIN" train "${C[@]}" "${L[@]}" --metrics-out full.jsonl --save full.bin \
  --checkpoint-dir ck --checkpoint-every 5
[ -f ck/step_00000005/manifest.txt ] || fail "no checkpoint at step 5"
ls ck/step_00000005 | grep -c state_ | grep -qx 4 || fail "expected 4 rank state files"
rm -rf ck/step_00000010
head -n 5 full.jsonl > resumed.jsonl
"${MPI[@]}" -np 4 "$MYELIN" train "${C[@]}" "${L[@]}" --checkpoint-dir ck --resume \
  --metrics-out resumed_tail.jsonl --save resumed.bin
cat resumed_tail.jsonl >> resumed.jsonl
diff <(losses full.jsonl) <(losses resumed.jsonl) || fail "resumed dp2 x pp2 run differs"
cmp full.bin resumed.bin || fail "resumed dp2 x pp2 model differs"
# A checkpoint written by another layout is refused with exit code 2.
set +e
"${MPI[@]}" -np 2 "$MYELIN" train "${C[@]}" --dp 2 --batch-size 1 --grad-accum 4 \
  --checkpoint-dir ck --resume 2> wrong.txt
rc=$?
set -e
[ $rc = 2 ] || fail "resume with a different layout: exit $rc, expected 2"
grep -q "dp x pp" wrong.txt || fail "message does not name the layout: $(cat wrong.txt)"
# A damaged state file of one rank stops every rank with exit code 2 and one
# message naming it (rank 0 checks every file's checksum for all ranks).
cp -r ck ck_bad
python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[200]^=1; open(p,"wb").write(b)' \
  ck_bad/step_00000005/state_3.bin
set +e
"${MPI[@]}" -np 4 "$MYELIN" train "${C[@]}" "${L[@]}" --checkpoint-dir ck_bad --resume 2> bad.txt
rc=$?
set -e
[ $rc = 2 ] || fail "resume from a damaged rank-3 state: exit $rc, expected 2: $(cat bad.txt)"
[ "$(grep -c '^myelin train:' bad.txt)" = 1 ] || fail "expected one message: $(cat bad.txt)"
grep -q "ck_bad/step_00000005/state_3.bin: checksum mismatch" bad.txt ||
  fail "message does not name the damaged file: $(cat bad.txt)"
echo "equivalence: 8 layouts match the one-process run, dp3 x zero1 matches dp3; dp2 x pp2 x zero1 resume is exact"
