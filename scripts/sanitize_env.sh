# Sourced by scripts/fuzz.sh and scripts/test_sanitize.sh (from the repository
# root): the one configuration of the sanitizer build and the runtime options
# of its sanitizers.
#
# build-asan: clang, ASan + UBSan on every target (findings abort), the
# tests/fuzz harnesses as libFuzzer executables, CUDA off. ccache is used when
# installed.
SAN_BUILD=${MYELIN_SAN_BUILD:-build-asan}

san_configure() {
  local launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  CC=clang CXX=clang++ cmake -S . -B "$SAN_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMYELIN_WERROR=ON -DMYELIN_CUDA=OFF -DMYELIN_SANITIZE=ON -DMYELIN_FUZZ=ON \
    "${launcher[@]}" >/dev/null
}

# Findings stop the process with a failing exit code. Tests under mpirun skip
# the exit-time leak check only (tests/CMakeLists.txt, myelin_mpi_test_env).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
