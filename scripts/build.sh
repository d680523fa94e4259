#!/usr/bin/env bash
# Configures and builds Myelin into ./build (CUDA backend if nvcc is found,
# MPI communicator if OpenMPI is installed), or into $MYELIN_BUILD_DIR.
# Extra arguments go to CMake, e.g. scripts/build.sh -DMYELIN_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${MYELIN_BUILD_DIR:-build}
export PATH="$PATH:/usr/local/cuda/bin"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMYELIN_WERROR=ON "$@" >/dev/null
ninja -C "$dir" -j"$(nproc)"
