#!/usr/bin/env bash
# On a GPU machine (CUDA toolkit, CMake, ninja; maybe no package registry):
# builds the CUDA backend without MPI and the pool, runs the GPU parity tests
# and the kernel benchmarks, and writes every log to ${OUT:-gpu-out}/.
# Packages the machine lacks are taken from .deps/debs (scripts/fetch_device_deps.sh),
# unpacked into .deps/root (never into /).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
{
  date -u
  nvidia-smi
  nvcc --version
  ls /usr/include/boost 2>/dev/null | head -3
  ls /usr/lib/x86_64-linux-gnu/libopenblas* 2>/dev/null | head -3
} > "$OUT/machine.txt" 2>&1
extra=()
if ls .deps/debs/*.deb >/dev/null 2>&1; then
  mkdir -p .deps/root
  for d in .deps/debs/*.deb; do dpkg -x "$d" .deps/root 2>/dev/null || (cd .deps/root && ar p "../../$d" data.tar.xz | tar xJ); done
  root=$PWD/.deps/root/usr
  arch=$root/lib/x86_64-linux-gnu
  # Debian's alternatives links are not created by dpkg -x: point at the real files.
  blas=$(ls "$arch"/openblas-pthread/libopenblas.so* 2>/dev/null | head -1)
  ln -sf "$(ls "$arch"/libboost_program_options.so.1.74.0)" "$arch/libboost_program_options.so" 2>/dev/null
  extra=(-DCMAKE_PREFIX_PATH="$root" -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu
    -DBoost_ROOT="$root" -DBLAS_LIBRARIES="$blas"
    -DCBLAS_INCLUDE_DIR="$root/include/x86_64-linux-gnu/openblas-pthread")
  export LD_LIBRARY_PATH="$arch:$arch/openblas-pthread:${LD_LIBRARY_PATH:-}"
fi
cmake -S . -B build-gpu -G Ninja -DMYELIN_MPI=OFF -DMYELIN_POOL=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
  "${extra[@]}" > "$OUT/configure.txt" 2>&1 || { tail -30 "$OUT/configure.txt"; exit 1; }
ninja -C build-gpu -j"$(nproc)" myelin gpu_test_cuda_ops test_cpu_ops > "$OUT/build.txt" 2>&1 ||
  { tail -30 "$OUT/build.txt"; exit 1; }
(cd build-gpu && ctest -L gpu --output-on-failure > "../$OUT/gpu_tests.txt" 2>&1)
tail -15 "$OUT/gpu_tests.txt"
./build-gpu/myelin bench --device cuda --models 124M --output "$OUT/bench_124M.json" > "$OUT/bench_124M.txt" 2>&1
./build-gpu/myelin bench --device cuda --models 350M,1.5B --reps 10 --output "$OUT/bench_large.json" > "$OUT/bench_large.txt" 2>&1
cat "$OUT/bench_124M.txt" | head -60
# Peers: PyTorch's fused attention at the same shapes, and llm.c's GPT-2 124M training
# next to Myelin's (see docs/gpu.md). Each is skipped when its prerequisite is missing.
if python3 -c 'import torch' >/dev/null 2>&1; then
  python3 scripts/bench_attention_torch.py --json "$OUT/attention_torch.json" \
    > "$OUT/attention_torch.txt" 2>&1
  tail -20 "$OUT/attention_torch.txt"
else
  echo "attention peer skipped: python3 cannot import torch"
fi
if [[ -d "${LLMC_DIR:-.deps/llm.c}" ]]; then
  OUT=$OUT LLMC_DIR=${LLMC_DIR:-.deps/llm.c} bash scripts/gpu_compare_llmc.sh \
    > "$OUT/compare_llmc_run.txt" 2>&1 || echo "gpu_compare_llmc.sh failed (exit $?)"
  tail -12 "$OUT/compare_llmc_run.txt"
else
  echo "llm.c comparison skipped: no ${LLMC_DIR:-.deps/llm.c} (see docs/gpu.md)"
fi
