#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds (warnings are
# errors), runs every CTest test. GPU tests report "skipped: no CUDA device"
# where there is none and are counted as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd build
ctest --output-on-failure -j2 --timeout 900
