#!/usr/bin/env bash
# On a CUDA machine (GPU + its own torch with CUDA, nvcc, triton): build QPART against that
# torch, run the GPU tests, and benchmark the CUDA path against cuBLAS/cuDNN fp16.
# Results go to benchmarks/results/gpu-<device>.{md,json} (or $OUT_DIR when set).
#   benchmarks/gpu/run.sh [--quick]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-$ROOT/benchmarks/results}"
mkdir -p "$OUT_DIR"

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('GPU:', torch.cuda.get_device_name())"
# Build for this GPU's architecture only (the default list compiles five targets, which
# takes several minutes); override with TORCH_CUDA_ARCH_LIST.
arch="$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}"
echo "==> build for sm_${TORCH_CUDA_ARCH_LIST} (no build isolation, against the installed torch)"
start=$SECONDS
QPART_BUILD_EXT=required MAX_JOBS="${MAX_JOBS:-8}" "$PY" -m pip install --no-build-isolation --no-deps -q -e .
echo "    built in $((SECONDS - start)) s"
device="$("$PY" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")"

echo "==> GPU tests"
QPART_REQUIRE_EXTENSION=1 "$PY" -m pytest -q tests/kernels/test_gpu.py tests/kernels/test_cuda_backend.py tests/kernels/test_triton.py tests/kernels/test_parity.py \
  2>&1 | tee "$OUT_DIR/gpu-$device-tests.txt"

if [[ "$("$PY" -c 'import qpart_kernels as q; print(q.ops.CUDA_BACKEND)')" == cuda ]]; then
  echo "==> GPU tests on the Triton backend too"
  QPART_CUDA_BACKEND=triton QPART_REQUIRE_EXTENSION=1 "$PY" -m pytest -q tests/kernels/test_gpu.py \
    2>&1 | tee "$OUT_DIR/gpu-$device-tests-triton.txt"
fi

echo "==> GPU benchmarks"
"$PY" benchmarks/gpu/bench_gpu.py --out "$OUT_DIR/gpu-$device.md" "$@"
