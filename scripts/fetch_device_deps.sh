#!/usr/bin/env bash
# Run on a machine with Debian's package registry: downloads (does not
# install) the Debian packages a GPU machine without a registry needs to build
# Myelin's CUDA parts and tests: Boost.Program_options, OpenBLAS, GoogleTest.
# They land in .deps/debs (ignored by git); scripts/gpu_session.sh unpacks them
# into .deps/root on the GPU machine. About 20 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs
cd .deps/debs
apt-get download libboost-program-options1.74.0 libboost-program-options1.74-dev libboost1.74-dev \
  libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libgtest-dev 2>&1 | grep -v '^W: ' || true
ls -la
