#!/usr/bin/env bash
# scripts/gpu_session.sh in its dry run (no configure, no build, no GPU work):
# every step leaves one summary line in order, GPU steps say why they were
# skipped, the output folder holds only summary.txt and logs.tar.gz (with one
# log per step), a step that hangs is stopped by its timeout, and once the
# session budget is spent the remaining steps are skipped, not run.
SCRIPT=$(cd "$(dirname "$0")/../.." && pwd)/scripts/gpu_session.sh
source "$(dirname "$0")/common.sh" "$@"
names=(info configure build kernels engine memcheck racecheck nccl train bench sdpa llmc)

check_layout() { # $1: output folder
  [ "$(ls "$1" | sort | tr '\n' ' ')" = "logs.tar.gz summary.txt " ] ||
    fail "$1 holds $(ls "$1" | tr '\n' ' ')"
  [ "$(wc -l < "$1/summary.txt")" = 13 ] || fail "summary has $(wc -l < "$1/summary.txt") lines"
  tar -tzf "$1/logs.tar.gz" > "$1.list" || fail "$1/logs.tar.gz is not a readable archive"
  for i in "${!names[@]}"; do
    n=$(printf '%02d' $((i + 1)))
    sed -n "$((i + 1))p" "$1/summary.txt" | grep -q "^$n ${names[$i]} " ||
      fail "line $((i + 1)) is not step $n ${names[$i]}: $(sed -n "$((i + 1))p" "$1/summary.txt")"
    grep -q "^./${n}_${names[$i]}.txt$" "$1.list" ||
      fail "no log of step ${names[$i]} in the archive"
  done
  tail -1 "$1/summary.txt" | grep -q '^total ' || fail "no total line"
}

# 1. The whole dry run: exit 0; the GPU steps are skipped (no device here, or
# a dry run where there is one).
OUT=$WORK/a bash "$SCRIPT" --dry-run > a.txt 2>&1 || fail "dry run exited $?: $(cat a.txt)"
check_layout "$WORK/a"
grep -q '^01 info .* ok$' a/summary.txt || fail "info did not run"
grep -Eq '^03 build .* skipped: dry run$' a/summary.txt || fail "build not skipped"
for s in kernels engine memcheck racecheck nccl train bench sdpa llmc; do
  grep -Eq "^[0-9]{2} $s .* skipped: (no CUDA device|dry run)$" a/summary.txt ||
    fail "step $s: $(grep " $s " a/summary.txt)"
done

# 2. A step that hangs: its timeout stops it (exit 1, TIMEOUT in the summary),
# and with a budget of 18 s nothing runs after it.
t0=$(date +%s)
if OUT=$WORK/b SESSION_DRY_HANG=configure SESSION_BUDGET=18 bash "$SCRIPT" --dry-run > b.txt 2>&1
then
  fail "a timed-out step must make the session exit 1"
fi
dt=$(( $(date +%s) - t0 ))
check_layout "$WORK/b"
grep -Eq '^02 configure .* TIMEOUT \(limit [0-9]+ s\)' b/summary.txt ||
  fail "configure: $(grep ' configure ' b/summary.txt)"
for s in build kernels engine memcheck racecheck nccl train bench sdpa llmc; do
  grep -Eq "^[0-9]{2} $s .* skipped: session budget spent" b/summary.txt ||
    fail "step $s after the budget: $(grep " $s " b/summary.txt)"
done
[ "$dt" -lt 30 ] || fail "the hanging dry run took $dt s"
echo "gpu_session dry run: 12 steps summarised and archived; hang stopped after ${dt} s in all"
