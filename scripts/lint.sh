#!/usr/bin/env bash
# Code habits, run by CI (.ci/run) and before every commit:
#   1. ruff lint + format check over the Python sources (config: pyproject.toml),
#   2. import-linter: the layer contracts of python/qpart (pyproject.toml [tool.importlinter]),
#   3. clang-format check of the C++ files listed in scripts/format_check.sh (when present).
# Uses the project venv ($QPART_VENV, default .venv; created if missing - no torch needed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QPART_VENV:-$ROOT/.venv}"
RUFF_PIN="ruff==0.17.6"
IMPORT_LINTER_PIN="import-linter==2.17"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating virtual environment $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -m ruff --version >/dev/null 2>&1 || ! "$VENV/bin/lint-imports" --help >/dev/null 2>&1; then
  echo "==> installing $RUFF_PIN $IMPORT_LINTER_PIN"
  "$PY" -m pip --disable-pip-version-check -q install "$RUFF_PIN" "$IMPORT_LINTER_PIN"
fi

cd "$ROOT"
PY_SOURCES=(python qpart_kernels tests benchmarks examples setup.py)
echo "==> ruff check"
"$PY" -m ruff check "${PY_SOURCES[@]}"
echo "==> ruff format --check"
"$PY" -m ruff format --check "${PY_SOURCES[@]}"
echo "==> import-linter (layer contracts of python/qpart)"
PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/lint-imports"
if [[ -x "$ROOT/scripts/format_check.sh" ]]; then
  echo "==> clang-format check"
  "$ROOT/scripts/format_check.sh"
fi
