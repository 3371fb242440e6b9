#!/usr/bin/env bash
# Builds a wheel with `pip wheel` against the venv's torch, installs it into a scratch
# environment that sees that torch, and checks the installed package runs its native
# kernels from outside the source tree. Run after scripts/setup_env.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QPART_VENV:-$ROOT/.venv}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "==> pip wheel"
(cd "$ROOT" && QPART_BUILD_EXT=required MAX_JOBS="${MAX_JOBS:-2}" \
  "$VENV/bin/python" -m pip wheel --disable-pip-version-check -q --no-build-isolation \
  --no-deps -w "$WORK/dist" .)
wheel=("$WORK"/dist/qpart-*.whl)
echo "    built $(basename "${wheel[0]}")"

echo "==> install into a scratch venv"
"$VENV/bin/python" -m venv "$WORK/venv"
site="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/base_env.pth"
"$WORK/venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps "${wheel[0]}"

cd "$WORK"
QPART_REQUIRE_EXTENSION=1 "$WORK/venv/bin/python" - <<'PY'
import torch, qpart, qpart_kernels as qk
assert "site-packages" in qk.__file__, qk.__file__
assert qk.extension_loaded()
lin = torch.nn.Linear(48, 5)
q = qk.QPartLinear.from_float(lin, 3)
x = torch.randn(2, 48)
torch.testing.assert_close(q(x), torch.nn.functional.linear(x, q.dequantized_weight(), lin.bias))
print("    wheel OK:", qk.__file__)
PY
