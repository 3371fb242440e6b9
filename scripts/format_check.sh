#!/usr/bin/env bash
# Checks that the listed C++ sources match the repository's .clang-format (Google based,
# 100 columns): clang-format --dry-run --Werror, so any difference fails with the diff's
# location. Installs clang-format (Debian package) if it is missing.
#
#   scripts/format_check.sh          check the files listed below
#   scripts/format_check.sh --fix    reformat them in place instead
#   scripts/format_check.sh FILE...  check (or with --fix, reformat) only these files
#
# The list grows as files are formatted; a file joins it once it has been run through
# `scripts/format_check.sh --fix FILE` (then commit the result).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/apt_deps.sh"

FILES=(
  csrc/kernels/conv2d.cpp
  csrc/kernels/conv2d_i8.cpp
  csrc/kernels/conv2d_i8_depthwise.cpp
  csrc/kernels/conv2d_i8_depthwise.h
  csrc/kernels/conv2d_i8_impl.h
  csrc/kernels/dispatch.cpp
  csrc/kernels/dispatch.h
  csrc/kernels/isa_table.cpp
  csrc/kernels/isa_table.h
  csrc/kernels/linear.cpp
  csrc/kernels/linear_fused_driver.h
  csrc/kernels/prefetch_stream.h
  csrc/kernels/linear_i8.cpp
  csrc/kernels/max_pool2d.cpp
  csrc/kernels/max_pool2d_impl.h
  csrc/kernels/qpart_kernels.h
  csrc/kernels/quantize.cpp
  csrc/kernels/arm/conv2d_i8_neon.cpp
  csrc/kernels/arm/conv2d_i8_neon_dot.cpp
  csrc/kernels/arm/conv2d_i8_neon_impl.h
  csrc/kernels/arm/linear_neon.cpp
  csrc/kernels/arm/max_pool2d_neon.cpp
  csrc/kernels/x86/avx2_util.h
  csrc/kernels/x86/conv2d_i8_amx.cpp
  csrc/kernels/x86/conv2d_i8_avx2.cpp
  csrc/kernels/x86/conv2d_i8_avx512.cpp
  csrc/kernels/x86/conv2d_i8_lanes_avx512.cpp
  csrc/kernels/x86/conv2d_i8_depthwise_avx2.cpp
  csrc/kernels/x86/conv2d_i8_zmm.h
  csrc/kernels/x86/conv2d_i8_x86_tile.h
  csrc/kernels/x86/linear_avx2.cpp
  csrc/kernels/x86/linear_avx512_gemm.cpp
  csrc/kernels/x86/linear_avx512_gemv.cpp
  csrc/kernels/x86/max_pool2d_avx2.cpp
  csrc/kernels/x86/conv2d_x86_tile.h
  csrc/tests/test_avx512_gemm.cpp
  csrc/tests/test_conv2d_i8.cpp
  csrc/tests/test_isa_table.cpp
  csrc/tests/test_linear_i8.cpp
  csrc/tests/test_max_pool2d.cpp
  csrc/torch/conv_i8_panel_cache.cpp
  csrc/torch/conv_i8_panel_cache.h
  csrc/torch/output_pool.cpp
  csrc/torch/output_pool.h
  csrc/torch/extension.cpp
  csrc/torch/max_pool2d_cpu.cpp
  csrc/torch/ops_cpu.cpp
  csrc/torch/op_checks.h
  csrc/torch/shared/op_quantize-impl.h
  csrc/cuda/ops_cuda.cpp
)

fix=0
if [[ $# -gt 0 && "$1" == "--fix" ]]; then
  fix=1
  shift
elif [[ $# -gt 0 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
  sed -n '2,11p' "${BASH_SOURCE[0]}"
  exit 0
fi
if [[ $# -gt 0 ]]; then FILES=("$@"); fi

CLANG_FORMAT="${CLANG_FORMAT:-clang-format}"
if [[ "$CLANG_FORMAT" == clang-format ]]; then
  apt_install_if_missing clang-format clang-format
fi
echo "==> $("$CLANG_FORMAT" --version)"

if [[ $fix == 1 ]]; then
  "$CLANG_FORMAT" -i --style=file "${FILES[@]}"
  echo "==> formatted ${#FILES[@]} files"
else
  "$CLANG_FORMAT" --dry-run --Werror --style=file "${FILES[@]}"
  echo "==> ${#FILES[@]} files match .clang-format"
fi
