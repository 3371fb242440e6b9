#!/usr/bin/env bash
# Creates (or reuses) the project virtual environment and installs QPART into it with its
# compiled extension. Sourced by scripts/demo.sh and scripts/test.sh; safe to re-run.
#
#   QPART_VENV        venv folder (default: .venv in the repository)
#   QPART_BUILD_EXT   auto | required | none  (see setup.py; default here: required)
#   QPART_EXTRAS      pip extras to install (default: test)
#
# torch: a torch already importable in the venv is never replaced (GPU machines and Jetsons
# bring their own). Otherwise the CPU build torch==2.13.0 is installed: a bare `torch`
# requirement would pull a multi-GB CUDA build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QPART_VENV:-$ROOT/.venv}"
EXTRAS="${QPART_EXTRAS:-test}"
TORCH_CPU_PIN="torch==2.13.0"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "==> using installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "==> installing $TORCH_CPU_PIN (CPU build)"
  "${PIP[@]}" install "$TORCH_CPU_PIN"
fi

echo "==> installing build tools"
"${PIP[@]}" install "setuptools>=64" wheel ninja numpy

echo "==> building and installing qpart (extension: ${QPART_BUILD_EXT:-required})"
(cd "$ROOT" && QPART_BUILD_EXT="${QPART_BUILD_EXT:-required}" MAX_JOBS="${MAX_JOBS:-2}" \
  "${PIP[@]}" install --no-build-isolation -e ".[${EXTRAS}]")
