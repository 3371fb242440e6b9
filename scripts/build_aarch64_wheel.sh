#!/usr/bin/env bash
# Builds an aarch64 wheel of the whole package (qpart + qpart_kernels with its native
# extension _C) on an x86 machine: downloads torch's aarch64 wheel from PyPI, cross-compiles
# csrc/ with g++-aarch64-linux-gnu against that torch's headers and libraries (and Debian's
# arm64 Python headers), and repacks the pure-Python wheel with the extension as
# qpart-*-cp310-abi3-manylinux_2_28_aarch64.whl.
#
#   scripts/build_aarch64_wheel.sh          -> build/aarch64/dist/qpart-*.whl
#
# Environment (see also scripts/arm_env.sh): QPART_ARM_CACHE (downloads, default
# ~/.cache/qpart-arm), QPART_ARM_TORCH (torch version to build against, default 2.9.1),
# QPART_VENV (x86 venv with pip and wheel; default .venv, else python3), MAX_JOBS (parallel
# compiler jobs, default 2), QPART_ARM_OUT (output folder, default build/aarch64).
set -euo pipefail

# shellcheck source=scripts/arm_env.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/arm_env.sh"
OUT="${QPART_ARM_OUT:-$ARM_ROOT/build/aarch64}"
JOBS="${MAX_JOBS:-2}"
CXX=aarch64-linux-gnu-g++

arm_host_tools
arm_torch_wheel
arm_sysroot # Python headers (libpython3.11-dev) come with the sysroot

TORCH_DIR="$ARM_CACHE/torch-$ARM_TORCH-dev"
if [[ ! -f "$TORCH_DIR/.complete" ]]; then
  arm_log "unpack torch headers and libraries from $(basename "$ARM_TORCH_WHEEL")"
  rm -rf "$TORCH_DIR"
  unzip -q "$ARM_TORCH_WHEEL" 'torch/include/*' 'torch/lib/libc10.so' 'torch/lib/libtorch.so' \
    'torch/lib/libtorch_cpu.so' -d "$TORCH_DIR"
  touch "$TORCH_DIR/.complete"
fi
TI="$TORCH_DIR/torch/include"

# The flags torch's BuildExtension passes for this extension (setup.py), for aarch64.
cxxflags=(-O3 -g0 -fvisibility=hidden -fopenmp -fPIC -std=c++20
  -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C -DPy_LIMITED_API=0x030A0000
  -D_GLIBCXX_USE_CXX11_ABI=1
  -I"$ARM_ROOT/csrc" -isystem "$TI" -isystem "$TI/torch/csrc/api/include"
  -isystem "$ARM_SYSROOT/usr/include/python$ARM_PY" -idirafter "$ARM_SYSROOT/usr/include")
mapfile -t sources < <(cd "$ARM_ROOT" && ls csrc/kernels/*.cpp csrc/kernels/x86/*.cpp \
  csrc/kernels/arm/*.cpp csrc/torch/*.cpp)

OBJ="$OUT/obj"
mkdir -p "$OBJ"
arm_log "cross-compile ${#sources[@]} sources with $CXX (-j$JOBS) into $OBJ"
export CXX OBJ ARM_ROOT
printf '%s\n' "${sources[@]}" | xargs -P "$JOBS" -I{} bash -c '
  src="$1"; shift; o="$OBJ/$(echo "$src" | tr / _).o"
  if [[ "$o" -nt "$ARM_ROOT/$src" && -z "${QPART_ARM_REBUILD:-}" ]]; then exit 0; fi
  echo "    $src"; "$CXX" "$@" -c "$ARM_ROOT/$src" -o "$o.tmp" && mv "$o.tmp" "$o"' _ {} "${cxxflags[@]}"

arm_log "link qpart_kernels/_C.so"
"$CXX" -shared -fopenmp -o "$OUT/_C.so" "$OBJ"/*.o -L"$TORCH_DIR/torch/lib" -lc10 -ltorch \
  -ltorch_cpu -Wl,--allow-shlib-undefined
aarch64-linux-gnu-strip --strip-unneeded "$OUT/_C.so"
file "$OUT/_C.so" 2>/dev/null | sed 's/^/    /' || true

arm_log "pure-Python wheel + the extension -> cp310-abi3-manylinux_2_28_aarch64"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$ARM_ROOT" && QPART_BUILD_EXT=0 "$HOST_PY" -m pip wheel -q --no-build-isolation --no-deps \
  -w "$WORK/pure" .)
pure=("$WORK"/pure/qpart-*-py3-none-any.whl)
"$HOST_PY" -m wheel unpack -d "$WORK/unpacked" "${pure[0]}" >/dev/null
tree=("$WORK"/unpacked/qpart-*)
find "${tree[0]}/qpart_kernels" -maxdepth 1 -name '_C*.so' -delete
cp "$OUT/_C.so" "${tree[0]}/qpart_kernels/_C.so"
wheelfile=("${tree[0]}"/qpart-*.dist-info/WHEEL)
sed -i -e 's/^Root-Is-Purelib: .*/Root-Is-Purelib: false/' \
  -e 's/^Tag: .*/Tag: cp310-abi3-manylinux_2_28_aarch64/' "${wheelfile[0]}"
mkdir -p "$OUT/dist"
rm -f "$OUT"/dist/qpart-*.whl
"$HOST_PY" -m wheel pack -d "$OUT/dist" "${tree[0]}" >/dev/null
built=("$OUT"/dist/qpart-*.whl)
echo "    built ${built[0]} (against torch $ARM_TORCH)"
