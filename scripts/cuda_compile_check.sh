#!/usr/bin/env bash
# Compile check of the CUDA backend without a GPU (CI): every csrc/cuda/*.cu is compiled to
# SASS for sm_87 (Jetson Orin) and sm_90 (Hopper) with the machine's nvcc and the flags torch
# passes to CUDA extensions; the ATen glue (csrc/cuda/*.cpp) is checked with -fsyntax-only
# against the installed (CPU) torch's headers plus the CUDA toolkit's.
#   scripts/cuda_compile_check.sh            # all .cu files, both architectures
#   ARCHS="87" scripts/cuda_compile_check.sh # fewer architectures
# Env: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), PYTHON (default: .venv's),
# CUDA_HOME (default /usr/local/cuda), ARCHS (default "87 90"), JOBS (parallel nvcc, default 1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
ARCHS="${ARCHS:-87 90}"
JOBS="${JOBS:-1}"
[ -x "$NVCC" ] || { echo "cuda_compile_check: nvcc not found" >&2; exit 2; }
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# The flags torch's BuildExtension passes to nvcc (plus ours from setup.py).
NVCC_FLAGS=(-std=c++20 --expt-relaxed-constexpr -O3
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__
  -Xcompiler -fPIC -Icsrc/cuda)
GENCODE=()
for a in $ARCHS; do GENCODE+=(-gencode "arch=compute_$a,code=sm_$a"); done

start=$(date +%s)
echo "nvcc: $("$NVCC" --version | tail -1); archs: $ARCHS"
pids=()
for f in csrc/cuda/*.cu; do
  (
    t0=$(date +%s)
    "$NVCC" "${NVCC_FLAGS[@]}" "${GENCODE[@]}" -c "$f" -o "$OUT/$(basename "$f").o"
    echo "  ok  $f ($(( $(date +%s) - t0 )) s)"
  ) &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done

INCLUDES=$("$PY" -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-I' + p for p in include_paths()))")
for f in csrc/cuda/*.cpp; do
  t0=$(date +%s)
  # shellcheck disable=SC2086
  "${CXX:-g++}" -std=c++20 -fsyntax-only -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE $INCLUDES \
    -I"$CUDA_HOME/include" -Icsrc "$f"
  echo "  ok  $f (syntax, $(( $(date +%s) - t0 )) s)"
done
echo "cuda_compile_check: all CUDA sources compile ($(( $(date +%s) - start )) s)"
