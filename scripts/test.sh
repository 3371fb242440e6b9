#!/usr/bin/env bash
# Installs QPART (scripts/setup_env.sh) and runs the whole test suite:
#   1. C++ unit tests of the torch-free kernel core (CMake + GoogleTest),
#   2. the Python tests (pytest), with the compiled extension required.
# Extra arguments are passed to pytest (e.g. scripts/test.sh -k linear -x).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
source "$ROOT/scripts/apt_deps.sh"

apt_install_if_missing /usr/include/gtest/gtest.h libgtest-dev
echo "==> C++ kernel-core tests"
"$ROOT/scripts/cpp_tests.sh"

echo "==> Python tests"
cd "$ROOT"
QPART_REQUIRE_EXTENSION=1 "$PY" -m pytest "$@"
