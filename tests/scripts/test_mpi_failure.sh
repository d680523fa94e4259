#!/usr/bin/env bash
# A rank that dies (kill -9) or hangs (SIGSTOP) does not hang the job: the
# others stop within a bounded time (--comm-timeout), a hang is reported with
# the rank it waited for, and the newest complete checkpoint is intact and
# resumable.
source "$(dirname "$0")/common.sh" "$@"
command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; exit 77; }
"$MYELIN" data synthetic --out data --examples 3000 --seed 4 >/dev/null
C=(--train-data data/addition_train_000.bin --layers 2 --channels 32 --heads 2 --max-seq-len 32
  --seq-len 32 --lr 1e-3 --quiet --threads 1 --batch-size 1 --dp 2 --comm-timeout 3)
rank_pid() { # pid of world rank $1 of the job whose checkpoint folder is $2
  for p in $(pgrep -f -- "--checkpoint-dir $2"); do
    if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then
      echo "$p"
      return
    fi
  done
}
wait_for() { # wait_for FILE: up to 60 s
  for _ in $(seq 600); do
    [ -e "$1" ] && return 0
    sleep 0.1
  done
  fail "timed out waiting for $1"
}
for mode in kill hang; do
  ck=ck_$mode
  start=$(date +%s)
  mpirun --oversubscribe --bind-to none -np 2 "$MYELIN" train "${C[@]}" --steps 1000000 \
    --checkpoint-dir $ck --checkpoint-every 10 > $mode.out 2> $mode.err &
  job=$!
  wait_for $ck/step_00000020/manifest.txt
  victim=$(rank_pid 1 $ck)
  [ -n "$victim" ] || fail "could not find rank 1"
  if [ $mode = kill ]; then kill -9 "$victim"; else kill -STOP "$victim"; fi
  set +e
  # The job must end by itself: give it 60 s, then count it as hung.
  for _ in $(seq 600); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
  if kill -0 $job 2>/dev/null; then
    kill -9 $job "$victim" 2>/dev/null
    fail "$mode: the job still runs 60 s after rank 1 stopped"
  fi
  wait $job
  rc=$?
  set -e
  kill -9 "$victim" 2>/dev/null || true
  [ $rc != 0 ] || fail "$mode: job exited 0 after losing a rank"
  echo "$mode: job ended with exit $rc after $(($(date +%s) - start)) s in all"
  if [ $mode = hang ]; then
    grep -q "waiting for rank 1" $mode.err || fail "hang: no message naming rank 1: $(cat $mode.err)"
  fi
  # No half-written checkpoint counts; the newest complete one resumes.
  latest=$(ls -d $ck/step_* | grep -v '\.tmp$' | sort | tail -n 1)
  step=$((10#${latest##*step_}))
  [ -f "$latest/manifest.txt" ] || fail "$mode: newest checkpoint folder lacks its manifest"
  mpirun --oversubscribe --bind-to none -np 2 "$MYELIN" train "${C[@]}" --steps $((step + 2)) \
    --checkpoint-dir $ck --resume --metrics-out resumed_$mode.jsonl
  [ "$(wc -l < resumed_$mode.jsonl)" = 2 ] || fail "$mode: resume did not run 2 steps from $step"
  grep -q "\"step\":$((step + 2))," resumed_$mode.jsonl || fail "$mode: resumed at the wrong step"
  echo "$mode: resumed from step $step"
done
