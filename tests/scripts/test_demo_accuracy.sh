#!/usr/bin/env bash
# scripts/demo.sh itself, shortened to 400 steps with this build's myelin: it
# ends with a well-formed exact-match accuracy line on held-out addition
# problems, the model gets far more of them right than at step 100 and than
# chance (a random answer of 3 digits is right once in 1000), the problems it
# shows are judged right, and the loss falls.
demo="$(cd "$(dirname "$0")/../.." && pwd)/scripts/demo.sh"
source "$(dirname "$0")/common.sh" "$@"
command -v mpirun >/dev/null || { echo "skipped: mpirun not installed"; exit 77; }
steps=400
DEMO_MYELIN="$MYELIN" DEMO_OUT="$WORK/demo" DEMO_STEPS=$steps timeout 600 bash "$demo" > out.txt 2>&1 ||
  fail "demo failed: $(tail -5 out.txt)"
line=$(grep '^exact-match accuracy:' out.txt) || fail "no accuracy line: $(tail -5 out.txt)"
[ "$(grep -c '^exact-match accuracy:' out.txt)" = 1 ] || fail "more than one accuracy line"
re='^exact-match accuracy: ([0-9]+\.[0-9])% \(([0-9]+)/([0-9]+) held-out problems\) after step ([0-9]+)$'
[[ $line =~ $re ]] || fail "malformed accuracy line: $line"
pct=${BASH_REMATCH[1]} k=${BASH_REMATCH[2]} n=${BASH_REMATCH[3]} at=${BASH_REMATCH[4]}
[ "$at" = $steps ] || fail "accuracy after step $at, expected $steps"
# The 2-digit held-out set holds about 1 in 20 of the 10^4 pairs; the demo asks for 500.
[ "$n" -ge 400 ] && [ "$n" -le 500 ] || fail "$n held-out problems scored"
[ "$k" -le "$n" ] || fail "$k of $n right"
[ "$(awk -v k="$k" -v n="$n" 'BEGIN { printf "%.1f", 100 * k / n }')" = "$pct" ] ||
  fail "$pct% is not $k/$n"
# Five held-out problems with the model's answers, each judged correctly
# (checked here with shell arithmetic; the answer is the sum reversed).
[ "$(grep -c '^held-out ' out.txt)" = 5 ] || fail "expected 5 held-out problems shown"
while read -r _ shown verdict rest; do
  [[ $shown =~ ^([0-9]{2})\+([0-9]{2})=([0-9]{3})$ ]] || fail "malformed: $shown"
  a=$((10#${BASH_REMATCH[1]})) b=$((10#${BASH_REMATCH[2]})) ans=${BASH_REMATCH[3]}
  sum=$(printf '%03d' $((a + b)) | rev)
  if [ "$ans" = "$sum" ]; then
    [ "$verdict" = right ] || fail "$shown is right but shown as $verdict $rest"
  else
    [ "$verdict $rest" = "wrong, expected $sum" ] || fail "$shown shown as $verdict $rest"
  fi
done < <(grep '^held-out ' out.txt)
# The accuracy printed at each validation (every 100 steps), first and last.
first=$(grep -m1 -oE 'exact [0-9.]+%' out.txt | grep -oE '[0-9.]+')
last=$(grep -oE 'exact [0-9.]+%' out.txt | tail -1 | grep -oE '[0-9.]+')
[ "$last" = "$pct" ] || fail "last logged accuracy $last% differs from the final line's $pct%"
awk -v a="$first" -v b="$pct" 'BEGIN { exit !(b >= 20 && b >= a + 15) }' ||
  fail "accuracy $pct% after $steps steps (at step 100: $first%): the model did not learn"
# The metrics file holds the same scores and a falling loss.
m="$WORK/demo/metrics.jsonl"
[ "$(wc -l < "$m")" = $steps ] || fail "metrics has $(wc -l < "$m") lines"
[ "$(grep -c '"exact_match":' "$m")" = $((steps / 100)) ] || fail "exact_match not in every 100th step"
losses "$m" > losses.txt
l0=$(awk 'NR <= 20 { s += $1 } END { print s / 20 }' losses.txt)
l1=$(awk -v n=$steps 'NR > n - 20 { s += $1 } END { print s / 20 }' losses.txt)
awk -v a="$l0" -v b="$l1" 'BEGIN { exit !(b < a - 0.5) }' || fail "loss $l0 -> $l1 did not fall"
echo "demo accuracy: $line (step 100: $first%), loss $l0 -> $l1"
