#!/usr/bin/env bash
# Every C++/CUDA source is clang-formatted (.clang-format at the root).
source "$(dirname "$0")/common.sh" "$@"
src=$(cd "$(dirname "$0")/../.." && pwd)
command -v clang-format >/dev/null || { echo "skipped: clang-format not installed"; exit 77; }
# Formatting differs between clang-format releases; the tree is formatted with 14 (Debian 12).
clang-format --version | grep -q "version 14\." || { echo "skipped: clang-format is not version 14"; exit 77; }
cd "$src"
files=$(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh' 2>/dev/null || find kernels runtime launch tests -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
clang-format --dry-run -Werror $files || fail "files above need clang-format -i"
echo "format: $(echo "$files" | wc -w) files clean"
