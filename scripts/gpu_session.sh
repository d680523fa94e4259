#!/usr/bin/env bash
# The GPU session: what a lent one-GPU machine (no package registry, maybe no
# MPI or Boost) runs, in one command, most valuable evidence first. docs/gpu.md
# says how to call it (what to carry, which timeout, the second call).
#
#   bash scripts/gpu_session.sh              # every step
#   SESSION_STEPS="train bench sdpa llmc" bash scripts/gpu_session.sh
#                                            # only these (info, configure and
#                                            # build always run; ninja is a no-op
#                                            # when build-gpu/ is current)
#   bash scripts/gpu_session.sh --dry-run    # no configure, no build: the step
#                                            # structure, summary and archive only
#
# Output, in ${OUT:-gpu-out}/, and nothing else there:
#   summary.txt   one line per step, appended as soon as the step ends:
#                 "NN name seconds STATUS | figures", STATUS = ok | FAIL (exit N) |
#                 TIMEOUT (limit N s) | skipped: why
#   logs.tar.gz   every log so far, re-packed after each step (written to a
#                 temporary name, then renamed: a cut-off call leaves the last
#                 complete archive)
#
# Build: build-gpu/, CUDA on, MPI and the pool off, -DMYELIN_NATIVE=OFF (no
# -march=native), sm_90, only the targets below. NCCL from the CUDA toolkit or
# the system, else from the Python environment's nvidia/nccl (include/ and only
# lib/libnccl.so.2: a link folder build-gpu/nccl gives the linker libnccl.so).
# Boost, OpenBLAS and GoogleTest from .deps/debs when the system lacks them
# (scripts/fetch_device_deps.sh, unpacked into .deps/root, never into /).
#
# Steps, each under `timeout` (limit in s; expected on a 16-core H200 with
# nothing hanging, about 7.5 min in all):
#   NN name       limit  expected  what
#   01 info          30      5     GPU, driver, nvcc, NCCL, PyTorch; starts the
#                                  llm.c build in the background (limit 330)
#   02 configure    120     15     cmake (unpacks .deps/debs first if present)
#   03 build        300    150     myelin, gpu_test_cuda_ops, gpu_test_nccl_comm
#   04 kernels      120     20     ctest: kernel parity (CudaOps*), 60 s per test
#   05 engine       120     20     ctest: CUDA engine vs CPU engine (CudaEngine.*)
#   06 memcheck     120     40     compute-sanitizer memcheck, kernel tests but matmul
#   07 racecheck    120     60     compute-sanitizer racecheck, the same tests
#   08 nccl          90     10     ctest: NcclOneGpu.* (world size 1, no MPI)
#   09 train        200     50     GPT-2 124M B=64 T=1024 bf16, 40 steps at
#                                  --recompute 0 and 1: tok/s, MFU (llm.c's FLOP
#                                  count and Myelin's) via gpu_compare_llmc.sh
#   10 bench         90     45     myelin bench --device cuda: 124M at B 64 x T 1024,
#                                  llama-1B at B 8 x T 2048
#   11 sdpa          90     30     PyTorch SDPA peer (flash, cuDNN, efficient), same shape
#   12 llmc         150     40     llm.c train_gpt2cu side by side (needs .deps/llm.c)
# The whole run also has a budget, SESSION_BUDGET (540 s): a step gets
# min(its limit, what is left - 10 s) and is skipped when under 15 s remain,
# so the summary and archive are complete before a 600 s call ends.
#
# Knobs: OUT, SESSION_STEPS, SESSION_BUDGET, SESSION_LIMIT_<name> (one step's
# limit), LLMC_DIR (.deps/llm.c), JOBS (nproc). For the structure test
# (tests/scripts/test_gpu_session.sh): SESSION_DRY_HANG=<name> makes that step
# of a dry run sleep past its limit.
# Exit status: 0 when every step that ran passed, 1 otherwise.
# shellcheck disable=SC2317  # the step functions run through `bash -c step_NAME`
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
export PATH="$PATH:/usr/local/cuda/bin"
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/summary.txt" "$OUT/logs.tar.gz"
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/myelin-gpu-session.XXXXXX")
BUILD=$ROOT/build-gpu
JOBS=${JOBS:-$(nproc)}
LLMC_DIR=${LLMC_DIR:-.deps/llm.c}
BUDGET=${SESSION_BUDGET:-540}
WANT=${SESSION_STEPS:-all}
START=$(date +%s)
STEPS=(info:30 configure:120 build:300 kernels:120 engine:120 memcheck:120 racecheck:120
  nccl:90 train:200 bench:90 sdpa:90 llmc:150)
SAN_FILTER='CudaOps/*.Encoder:CudaOpsBuckets.*:CudaOps/*.LayerNorm:CudaOps/*.Attention:CudaOpsTc.*:CudaOps/*.GeluResidual:CudaOps/*.Classifier:CudaOps/*.AdamW:CudaOps/*.SumSquaresAndScale'
export ROOT OUT LOGS BUILD JOBS LLMC_DIR SAN_FILTER

HAVE_GPU=0
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && HAVE_GPU=1
BUILT=0
FAILED=0

# ---- the steps (each runs in its own bash under timeout; a step may write one
# line of figures to $FIG and exit 77 after printing "skipped: why") ---------

step_info() {
  date -u
  nvidia-smi || true
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  nvcc --version || true
  command -v compute-sanitizer || echo "no compute-sanitizer"
  printf '%s\n' /usr/local/cuda/lib64/*cublas* /usr/local/cuda/lib64/*nccl* 2>/dev/null || true
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true
  python3 -c 'import nvidia.nccl as n; print("python nccl:", list(n.__path__)[0])' || true
  lscpu | grep -E 'Model name|^CPU\(s\)|Flags' | cut -c1-200
  printf '%s, %s, nvcc %s\n' \
    "$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)" \
    "driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)" \
    "$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')" > "$FIG"
}

# Sets DEPS_ARGS (CMake arguments) and LD_LIBRARY_PATH for the unpacked debs.
deps_env() {
  DEPS_ARGS=()
  local root=$ROOT/.deps/root/usr
  local arch=$root/lib/x86_64-linux-gnu
  [[ -d "$arch" ]] || return 0
  local blas
  blas=$(ls "$arch"/openblas-pthread/libopenblas.so* 2>/dev/null | head -1)
  DEPS_ARGS=(-DCMAKE_PREFIX_PATH="$root" -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu
    -DBoost_ROOT="$root" -DBLAS_LIBRARIES="$blas"
    -DCBLAS_INCLUDE_DIR="$root/include/x86_64-linux-gnu/openblas-pthread")
  export LD_LIBRARY_PATH="$arch:$arch/openblas-pthread:${LD_LIBRARY_PATH:-}"
}

# Prints the folder to pass as NCCL_ROOT (a link folder over the Python
# environment's NCCL), or nothing when the toolkit or the system has NCCL.
nccl_root() {
  local cuda
  cuda=$(dirname "$(dirname "$(command -v nvcc)")")
  if [[ -f "$cuda/include/nccl.h" || -f /usr/include/nccl.h ]] &&
     ls "$cuda"/lib64/libnccl.so* /usr/lib/x86_64-linux-gnu/libnccl.so* >/dev/null 2>&1; then
    return 0
  fi
  local py
  py=$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null) || return 0
  [[ -f "$py/include/nccl.h" && -f "$py/lib/libnccl.so.2" ]] || return 0
  mkdir -p "$BUILD/nccl/lib"
  ln -sfn "$py/include" "$BUILD/nccl/include"
  ln -sf "$py/lib/libnccl.so.2" "$BUILD/nccl/lib/libnccl.so.2"
  ln -sf "$py/lib/libnccl.so.2" "$BUILD/nccl/lib/libnccl.so"
  echo "$BUILD/nccl"
}

step_configure() {
  if ls "$ROOT"/.deps/debs/*.deb >/dev/null 2>&1 && [[ ! -d "$ROOT/.deps/root/usr" ]]; then
    mkdir -p "$ROOT/.deps/root"
    for d in "$ROOT"/.deps/debs/*.deb; do
      dpkg -x "$d" "$ROOT/.deps/root" 2>/dev/null ||
        (cd "$ROOT/.deps/root" && ar p "$d" data.tar.xz | tar xJ)
    done
    # Debian's alternatives links are not made by dpkg -x: point at the real file.
    local arch=$ROOT/.deps/root/usr/lib/x86_64-linux-gnu
    ln -sf "$(ls "$arch"/libboost_program_options.so.1.* | head -1)" \
      "$arch/libboost_program_options.so" 2>/dev/null
  fi
  deps_env
  local nr
  nr=$(nccl_root)
  local args=(-DMYELIN_CUDA=ON -DMYELIN_MPI=OFF -DMYELIN_POOL=OFF -DMYELIN_NATIVE=OFF
    -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release "${DEPS_ARGS[@]}")
  [[ -n "$nr" ]] && args+=(-DNCCL_ROOT="$nr")
  echo "+ cmake ${args[*]}"
  if ! cmake -S "$ROOT" -B "$BUILD" -G Ninja "${args[@]}"; then
    # Without GoogleTest the tests cannot be built, but training and the
    # benchmarks still can: worth the rest of the lease.
    echo "=== configure failed; again without the tests (BUILD_TESTING=OFF) ==="
    cmake -S "$ROOT" -B "$BUILD" -G Ninja "${args[@]}" -DBUILD_TESTING=OFF || return 1
  fi
  grep -h 'myelin: NCCL' "$STEPLOG" | head -1 | sed 's/^-- myelin: //' > "$FIG"
}

step_build() {
  deps_env
  local targets=(myelin) t
  for t in gpu_test_cuda_ops gpu_test_nccl_comm; do
    grep -q "^build $t:" "$BUILD/build.ninja" && targets+=("$t")
  done
  echo "+ ninja -j$JOBS ${targets[*]}"
  ninja -C "$BUILD" -j"$JOBS" "${targets[@]}" || return 1
  echo "built ${targets[*]}" > "$FIG"
}

# ctest over the tests matching $2 of binary $1; figures: the pass line and
# the failed tests.
ctest_step() {
  [[ -x "$BUILD/tests/$1" ]] || { echo "skipped: no $1 (tests not built)"; return 77; }
  shift
  deps_env
  ctest --test-dir "$BUILD" -L gpu -R "$1" -j "${2:-1}" --output-on-failure
  local rc=$?
  { grep -E 'tests passed|tests failed out of' "$STEPLOG" | tail -1
    grep -A20 'The following tests FAILED' "$STEPLOG" | grep -E '^\s+[0-9]+ - ' |
      sed 's/^ *[0-9]* - //; s/ (.*//' | head -6 | tr '\n' ' '
  } | tr '\n' ' ' > "$FIG"
  return "$rc"
}
step_kernels() { ctest_step gpu_test_cuda_ops '^CudaOps' 4; }
step_engine() { ctest_step gpu_test_cuda_ops '^CudaEngine\.' 2; }
step_nccl() { ctest_step gpu_test_nccl_comm '^NcclOneGpu\.' 1; }

sanitizer_step() {
  deps_env
  command -v compute-sanitizer >/dev/null || { echo "skipped: no compute-sanitizer"; return 77; }
  [[ -x "$BUILD/tests/gpu_test_cuda_ops" ]] || { echo "skipped: tests not built"; return 77; }
  compute-sanitizer --tool "$1" --error-exitcode 9 --print-limit 30 \
    "$BUILD/tests/gpu_test_cuda_ops" --gtest_filter="$SAN_FILTER"
  local rc=$?
  { grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$STEPLOG" | tail -1
    grep -cE '^\[ +OK +\]' "$STEPLOG" | sed 's/$/ tests ok/'
  } | tr '\n' ' ' > "$FIG"
  return "$rc"
}
step_memcheck() { sanitizer_step memcheck; }
step_racecheck() { sanitizer_step racecheck; }

# gpu_compare_llmc.sh writes its logs here.
CMP=$LOGS/compare_llmc
export CMP
compare_figures() {
  python3 - "$CMP/compare_llmc.json" > "$FIG" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("no compare_llmc.json:", e); sys.exit()
out = []
for r in d["rows"]:
    f = lambda v, s: "-" if v is None else s.format(v)
    out.append(f"{r['run']}: {f(r['tok_s'], '{:.0f}')} tok/s, MFU common {f(r['mfu_common'] and r['mfu_common']*100, '{:.1f}%')}"
               f" own {f(r['mfu_own'] and r['mfu_own']*100, '{:.1f}%')}, {f(r['ms'], '{:.1f}')} ms"
               + (f", {r['vs_llmc']:.2f}x llm.c" if r.get('vs_llmc') else ""))
print("; ".join(out))
PY
}
step_train() {
  OUT=$CMP LLMC_DIR=$LOGS/no-llmc MYELIN_RECOMPUTE="0 1" STEPS=40 RUN_TIMEOUT=80 \
    bash "$ROOT/scripts/gpu_compare_llmc.sh"
  local rc=$?
  compare_figures
  return "$rc"
}

step_bench() {
  deps_env
  "$BUILD/myelin" bench --device cuda --models 124M --cuda-batch 64 --cuda-seq 1024 \
    --output "$LOGS/bench_124M_B64.json"
  local rc=$?
  # The Llama kernels (RMSNorm, rotary, SwiGLU, grouped-query attention) at Llama 3.2 1B's shape.
  "$BUILD/myelin" bench --device cuda --models llama-1B --cuda-batch 8 --cuda-seq 2048 \
    --output "$LOGS/bench_llama1B_B8.json" || rc=1
  grep -m1 '^limits:' "$STEPLOG" | cut -c1-200 > "$FIG"
  return "$rc"
}

step_sdpa() {
  python3 -c 'import torch' 2>/dev/null || { echo "skipped: python3 cannot import torch"; return 77; }
  python3 "$ROOT/scripts/bench_attention_torch.py" --models 124M --batch 64 --seq 1024 \
    --json "$LOGS/attention_torch.json"
  local rc=$?
  grep -E '^124M ' "$STEPLOG" | tr -s ' ' | cut -d' ' -f3- | head -4 | paste -sd';' > "$FIG"
  return "$rc"
}

step_llmc() {
  [[ -f "$ROOT/$LLMC_DIR/train_gpt2.cu" || -f "$LLMC_DIR/train_gpt2.cu" ]] ||
    { echo "skipped: no $LLMC_DIR (see docs/gpu.md)"; return 77; }
  # The background build (started with step 01) has its own timeout; wait for it.
  while [[ -n "${LLMC_BG:-}" ]] && kill -0 "$LLMC_BG" 2>/dev/null; do sleep 1; done
  tail -5 "$LOGS/llmc_build_bg.txt" 2>/dev/null
  OUT=$CMP MYELIN_RECOMPUTE="" STEPS=40 RUN_TIMEOUT=90 bash "$ROOT/scripts/gpu_compare_llmc.sh"
  local rc=$?
  OUT=$CMP bash "$ROOT/scripts/gpu_compare_llmc.sh" --summary-only
  compare_figures
  return "$rc"
}

export -f step_info deps_env nccl_root step_configure step_build ctest_step step_kernels \
  step_engine step_nccl sanitizer_step step_memcheck step_racecheck compare_figures step_train \
  step_bench step_sdpa step_llmc

# ---- the runner ----------------------------------------------------------------

pack() {
  tar -czf "$OUT/logs.tar.gz.part" -C "$LOGS" . 2>/dev/null &&
    mv -f "$OUT/logs.tar.gz.part" "$OUT/logs.tar.gz"
}

# record NN name status seconds figures
record() {
  printf '%s %-9s %4ss  %s%s\n' "$1" "$2" "$4" "$3" "${5:+ | $5}" | cut -c1-600 >> "$OUT/summary.txt"
  pack
}

wanted() { [[ "$WANT" == all || " $WANT " == *" $1 "* || "$1" =~ ^(info|configure|build)$ ]]; }

n=0
for entry in "${STEPS[@]}"; do
  name=${entry%%:*}
  limit=${entry#*:}
  n=$((n + 1))
  nn=$(printf '%02d' "$n")
  override="SESSION_LIMIT_$name"
  limit=${!override:-$limit}
  log=$LOGS/${nn}_$name.txt
  fig=$LOGS/${nn}_$name.fig
  left=$((BUDGET - ($(date +%s) - START) - 10))
  (( limit > left )) && limit=$left
  gpu_step=1
  [[ $name =~ ^(info|configure|build)$ ]] && gpu_step=0
  reason=
  if ! wanted "$name"; then
    reason="skipped: not in SESSION_STEPS"
  elif (( left < 5 )); then
    reason="skipped: session budget spent (SESSION_BUDGET=$BUDGET s)"
  elif (( gpu_step && ! HAVE_GPU )) && [[ "${SESSION_DRY_HANG:-}" != "$name" ]]; then
    reason="skipped: no CUDA device"
  elif (( DRY )) && [[ "${SESSION_DRY_HANG:-}" != "$name" ]] && [[ $name != info ]]; then
    reason="skipped: dry run"
  elif (( gpu_step && ! BUILT && ! DRY )); then
    reason="skipped: the build failed"
  fi
  if [[ -n "$reason" ]]; then
    echo "$reason" > "$log"
    record "$nn" "$name" "$reason" 0 ""
    continue
  fi
  if [[ $name == info ]] && (( ! DRY )) && [[ -f "$LLMC_DIR/train_gpt2.cu" ]] && wanted llmc; then
    # llm.c's build needs nothing of ours: it runs beside ours, with its own limit.
    OUT=$CMP timeout -k 5 330 bash "$ROOT/scripts/gpu_compare_llmc.sh" --build-only \
      > "$LOGS/llmc_build_bg.txt" 2>&1 &
    LLMC_BG=$!
    export LLMC_BG
  fi
  t0=$(date +%s)
  if (( DRY )) && [[ "${SESSION_DRY_HANG:-}" == "$name" ]]; then
    cmd="sleep 100000"
  elif (( DRY )); then
    cmd="echo dry run; date -u"
  else
    cmd="step_$name"
  fi
  STEPLOG=$log FIG=$fig timeout -k 5 "$limit" bash -c "$cmd" > "$log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=ok ;;
    77) status=$(grep '^skipped: ' "$log" | tail -1); status=${status:-skipped} ;;
    124|137) status="TIMEOUT (limit $limit s)"; FAILED=1 ;;
    *) status="FAIL (exit $rc)"; FAILED=1 ;;
  esac
  [[ $name == build && $rc -eq 0 ]] && BUILT=1
  figures=$(cat "$fig" 2>/dev/null)
  last=$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-200)
  [[ -z "$figures" && $rc -ne 0 && $rc -ne 77 && -n "$last" ]] && figures="last: $last"
  record "$nn" "$name" "$status" "$dt" "$figures"
done
[[ -n "${LLMC_BG:-}" ]] && kill "$LLMC_BG" 2>/dev/null # timeout passes it on to the build
printf 'total %s s, budget %s s\n' "$(( $(date +%s) - START ))" "$BUDGET" >> "$OUT/summary.txt"
pack
cat "$OUT/summary.txt"
rm -rf "$LOGS"
exit $FAILED
