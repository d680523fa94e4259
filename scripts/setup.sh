#!/usr/bin/env bash
# Installs the Debian packages Myelin needs to build, test and run on a fresh machine.
# Safe to run repeatedly: it only calls apt-get when something is missing.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config
      libopenblas-dev libomp-dev
      libboost-program-options-dev
      libgtest-dev
      openmpi-bin libopenmpi-dev
      nlohmann-json3-dev libcpp-httplib-dev libssl-dev openssl libsqlite3-dev zlib1g-dev
      python3 python3-numpy clang-format
      clang libclang-rt-dev
      chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
