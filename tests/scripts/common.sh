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
