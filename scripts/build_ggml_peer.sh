#!/usr/bin/env bash
# Builds ggml's CPU libraries for the GEMV benchmark's ggml peer (benchmarks/ggml_peer.py)
# from the ggml sources vendored in the ggml-python sdist on PyPI (no other download), and
# prints the QPART_GGML_LIB value to use:
#
#   scripts/build_ggml_peer.sh [build folder, default build/ggml]
#   QPART_GGML_LIB=build/ggml/src python -P benchmarks/cpu_time_linear.py --threads 2 ...
#
# Environment: GGML_PYTHON_VERSION (default 0.0.45: ggml 0.15.3), JOBS (default 2).
# ggml is built with -DGGML_NATIVE=ON (its own -march=native: it is a peer, not QPART) and
# without OpenMP (the peer drives ggml's own thread pool). Needs cmake and a C/C++ compiler.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m "${1:-$ROOT/build/ggml}")"
VERSION="${GGML_PYTHON_VERSION:-0.0.45}"
JOBS="${JOBS:-2}"
PY="${QPART_VENV:-$ROOT/.venv}/bin/python"
[[ -x "$PY" ]] || PY=python3

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
  "ggml-python==$VERSION" -d "$work"
tar -xzf "$work"/ggml_python-"$VERSION".tar.gz -C "$work"
src="$work/ggml_python-$VERSION/vendor/ggml"
cmake -S "$src" -B "$OUT" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_OPENMP=OFF \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=ON >/dev/null
cmake --build "$OUT" -j "$JOBS" --target ggml ggml-cpu ggml-base >/dev/null
echo "QPART_GGML_LIB=$OUT/src"
