# Helpers for the script tests. Usage: source common.sh "$@" (sets MYELIN, WORK).
set -euo pipefail
MYELIN=${1:?path to the myelin binary}
WORK=${2:?work folder}
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# Losses of a metrics file, one per line, exactly as written.
losses() { sed -E 's/.*"loss":([^,]*),.*/\1/' "$1"; }
# expect2 NEEDLE ARGS...: `myelin ARGS` exits 2 with one line on stderr
# containing NEEDLE (bad input); counts the cases in n.
n=0
expect2() {
  local needle=$1
  shift
  set +e
  timeout 60 "$MYELIN" "$@" >out.txt 2>err.txt
  local rc=$?
  set -e
  [ $rc = 2 ] || fail "exit $rc (expected 2) for: $* :: $(cat err.txt)"
  [ "$(wc -l < err.txt)" = 1 ] || fail "expected one line on stderr for: $* :: $(cat err.txt)"
  grep -qF -- "$needle" err.txt || fail "message lacks '$needle' for: $* :: $(cat err.txt)"
  n=$((n + 1))
}
