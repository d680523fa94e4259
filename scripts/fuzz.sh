#!/usr/bin/env bash
# Runs every libFuzzer harness of tests/fuzz/ for SECONDS each (default 60)
# under ASan + UBSan, one after the other, each on a fresh copy of its
# committed corpus. Builds build-asan first (scripts/sanitize_env.sh).
# Prints one line per harness (runs, new corpus units, findings) and exits 1
# if any harness found anything; a finding's input is in
# build-asan/fuzz-run/<harness>/ (add it to tests/fuzz/corpus/<harness>/ once
# fixed, so the corpus replay keeps it fixed). New units stay in
# build-asan/fuzz-run/<harness>/corpus/.
#   scripts/fuzz.sh [SECONDS] [HARNESS...]   e.g. scripts/fuzz.sh 300 fuzz_pool_job
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: SECONDS must be a positive integer, got '$secs'" >&2; exit 2; }
source scripts/sanitize_env.sh
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.cpp; do harnesses+=("$(basename "$f" .cpp)"); done
fi
for h in "${harnesses[@]}"; do
  [ -d "tests/fuzz/corpus/$h" ] || { echo "fuzz.sh: no harness $h (tests/fuzz/corpus/$h)" >&2; exit 2; }
done
san_configure
ninja -C "$SAN_BUILD" -j"$(nproc)" "${harnesses[@]}"

# libFuzzer checks leaks per input itself; -rss_limit_mb and -timeout turn
# runaway memory or a hang into a finding.
export ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=1"
found=0
summary=()
for h in "${harnesses[@]}"; do
  run="$SAN_BUILD/fuzz-run/$h"
  rm -rf "$run"
  mkdir -p "$run/corpus"
  cp tests/fuzz/corpus/"$h"/* "$run/corpus/"
  before=$(ls "$run/corpus" | wc -l)
  start=$(date +%s)
  set +e
  "$SAN_BUILD/tests/fuzz/$h" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$run/" "$run/corpus" >"$run/log.txt" 2>&1
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log.txt" | tail -1)
  after=$(ls "$run/corpus" | wc -l)
  artifacts=$(find "$run" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
    -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) | wc -l)
  status=ok
  if [ "$rc" -ne 0 ] || [ "$artifacts" -ne 0 ]; then
    status="FINDING (exit $rc, $artifacts inputs in $run/, log $run/log.txt)"
    found=1
    grep -m3 -E 'ERROR|runtime error|invariant failed|terminate' "$run/log.txt" || true
  fi
  summary+=("$(printf '%-28s %5ss %10s runs %5s new units  %s' "$h" "$took" "${runs:-?}" \
    "$((after - before))" "$status")")
done
echo "fuzz summary (${secs}s each):"
printf '  %s\n' "${summary[@]}"
exit "$found"
