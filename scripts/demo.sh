#!/usr/bin/env bash
# Installs QPART (scripts/setup_env.sh) and runs the main demo: `qpart demo`.
# Extra arguments are passed to `qpart demo` (see `qpart demo --help`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QPART_EXTRAS="${QPART_EXTRAS:-demo}" source "$ROOT/scripts/setup_env.sh"
"$VENV/bin/qpart" demo "$@"
