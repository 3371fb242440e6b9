#!/usr/bin/env bash
# Builds the torch-free kernel core (csrc/kernels) with its GoogleTest unit tests
# (csrc/tests) and runs them with ctest.
#
#   scripts/cpp_tests.sh            native build in build/cmake
#   scripts/cpp_tests.sh --aarch64  cross build in build/cmake-aarch64 (toolchain file
#                                   cmake/aarch64-linux-gnu.cmake), tests run under qemu
#
# Environment: JOBS (parallel build jobs, default 2), BUILD_TYPE (default Release),
# any extra arguments after the mode are passed to ctest (e.g. -R Half).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${JOBS:-2}"
BUILD_TYPE="${BUILD_TYPE:-Release}"

mode=native
if [[ $# -gt 0 && "$1" == "--aarch64" ]]; then
  mode=aarch64
  shift
elif [[ $# -gt 0 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
  sed -n '2,11p' "${BASH_SOURCE[0]}"
  exit 0
fi

for tool in cmake ctest; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: '$tool' not found; install it with: apt-get install -y --no-install-recommends cmake" >&2
    exit 1
  fi
done

cmake_args=(-DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DQPART_BUILD_TESTS=ON)
if [[ "$mode" == aarch64 ]]; then
  missing=()
  command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || missing+=(aarch64-linux-gnu-g++)
  command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-aarch64)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "error: missing ${missing[*]} for the aarch64 cross build; install with:" >&2
    echo "  apt-get install -y --no-install-recommends g++-aarch64-linux-gnu qemu-user" >&2
    exit 1
  fi
  BUILD_DIR="$ROOT/build/cmake-aarch64"
  cmake_args+=(-DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake")
else
  BUILD_DIR="$ROOT/build/cmake"
fi

echo "==> configure ($mode) in $BUILD_DIR"
cmake -S "$ROOT" -B "$BUILD_DIR" "${cmake_args[@]}"
echo "==> build (-j$JOBS)"
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "==> ctest"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" "$@"
if [[ "$mode" == aarch64 && $# -eq 0 ]]; then
  # The integer path picks sdot at run time (HWCAP_ASIMDDP): check both the sdot kernel
  # (qemu's default "max" CPU has it) and the plain-NEON fallback on a CPU model without it
  # (cortex-a53 raises SIGILL on sdot, so a wrong dispatch fails loudly).
  echo "==> integer path under qemu -cpu max (sdot) and -cpu cortex-a53 (no sdot)"
  QPART_EXPECT_DOTPROD=1 qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu \
    "$BUILD_DIR/qpart_core_tests" --gtest_filter='LinearI8.*' --gtest_brief=1
  QPART_EXPECT_DOTPROD=0 qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu \
    "$BUILD_DIR/qpart_core_tests" --gtest_filter='LinearI8.*:Simd*' --gtest_brief=1
fi
