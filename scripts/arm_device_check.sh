#!/usr/bin/env bash
# The ARM device end to end under emulation: builds the aarch64 wheel
# (scripts/build_aarch64_wheel.sh), installs it with PyPI's aarch64 torch into a target dir
# for Debian's arm64 python3.11 (a dpkg -x sysroot, run by qemu-aarch64 - no VM), starts
# `qpart serve` on x86 on a loopback port, and runs the same device flow
# (scripts/arm_device_run.py: plan, fetch the segment, run it, send the packed activation,
# get the answer) on the x86 venv and on the emulated ARM device with and without the
# dot-product extension (-cpu max / -cpu cortex-a53). Then scripts/arm_device_compare.py
# checks the ARM answers against the x86 device's (same plans; bit-identical or within the
# documented float tolerance) and the two ARM CPUs against each other (bit-identical).
#
#   scripts/arm_device_check.sh          reduced form (CI): mnist-mlp, one plan, 3 inputs
#   scripts/arm_device_check.sh --full   mnist-mlp, mnist-cnn, mnist-resnet; budgets 0.01
#                                        and 0.02; 8 inputs each
#
# Environment: everything scripts/build_aarch64_wheel.sh and scripts/arm_env.sh take
# (QPART_ARM_CACHE, QPART_ARM_TORCH, QPART_VENV, MAX_JOBS), plus QPART_ARM_CPUS (qemu CPU
# models, default "max cortex-a53"), QPART_ARM_PORT (server port, default 8731),
# QPART_ARM_SERVE_TIMEOUT (seconds to wait for the server, default 600: a fresh machine
# trains the built-in models first).
set -euo pipefail

# shellcheck source=scripts/arm_env.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/arm_env.sh"
OUT="${QPART_ARM_OUT:-$ARM_ROOT/build/aarch64}"
PORT="${QPART_ARM_PORT:-8731}"
read -r -a CPUS <<<"${QPART_ARM_CPUS:-max cortex-a53}"
if [[ "${1:-}" == "--full" ]]; then
  MODELS=(mnist-mlp mnist-cnn mnist-resnet) BUDGETS=(0.01 0.02) INPUTS=8
elif [[ $# -eq 0 ]]; then
  MODELS=(mnist-mlp) BUDGETS=(0.02) INPUTS=3
else
  sed -n '2,22p' "${BASH_SOURCE[0]}"
  exit 2
fi
start=$SECONDS

"$ARM_ROOT/scripts/build_aarch64_wheel.sh"
wheel=("$OUT"/dist/qpart-*aarch64.whl)
arm_torch_wheel # cached by the build: sets ARM_TORCH_WHEEL

if [[ ! -f "$ARM_SITE/.complete" ]]; then
  arm_log "aarch64 torch $ARM_TORCH + the device's dependencies -> $ARM_SITE"
  rm -rf "$ARM_SITE"
  # torch without its deps (pip would evaluate its CUDA markers for the x86 host), then
  # the pure/aarch64 dependencies the device imports.
  "$HOST_PY" -m pip install -q --target "$ARM_SITE" "${ARM_PIP_PLATFORM[@]}" --no-deps \
    "$ARM_TORCH_WHEEL"
  "$HOST_PY" -m pip install -q --target "$ARM_SITE" "${ARM_PIP_PLATFORM[@]}" --upgrade \
    filelock "typing-extensions>=4.10" "sympy>=1.13.3" networkx jinja2 fsspec numpy \
    "httpx>=0.27" "safetensors>=0.4" tqdm 2>&1 | grep -v 'already exists' || true
  touch "$ARM_SITE/.complete"
fi
DEV_TARGET="$OUT/device-target"
rm -rf "$DEV_TARGET"
"$HOST_PY" -m pip install -q --target "$DEV_TARGET" "${ARM_PIP_PLATFORM[@]}" --no-deps "${wheel[0]}"
DEV_PATH="$DEV_TARGET:$ARM_SITE"

WORK="$OUT/records" # the JSON records and the server log stay for inspection
rm -rf "$WORK"
mkdir -p "$WORK"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
model_args=() run_args=()
for m in "${MODELS[@]}"; do model_args+=(--model "$m") run_args+=(--model "$m"); done
for b in "${BUDGETS[@]}"; do run_args+=(--budget "$b"); done
run_args+=(--inputs "$INPUTS" --url "http://127.0.0.1:$PORT")

arm_log "qpart serve ${model_args[*]} on 127.0.0.1:$PORT (x86)"
(cd "$WORK" && PYTHONPATH="$ARM_ROOT/python" exec "$HOST_PY" -m qpart.cli serve \
  "${model_args[@]}" --port "$PORT" >"$WORK/serve.log" 2>&1) &
server_pid=$!
deadline=$((SECONDS + ${QPART_ARM_SERVE_TIMEOUT:-600}))
until "$HOST_PY" -c "import httpx,sys; httpx.get('http://127.0.0.1:$PORT/v1/models').raise_for_status()" \
  2>/dev/null; do
  if ! kill -0 "$server_pid" 2>/dev/null || ((SECONDS > deadline)); then
    cat "$WORK/serve.log" >&2
    arm_die "qpart serve did not come up on port $PORT"
  fi
  sleep 2
done

arm_log "x86 device"
(cd "$WORK" && PYTHONPATH="$ARM_ROOT/python" QPART_REQUIRE_EXTENSION=1 "$HOST_PY" \
  "$ARM_ROOT/scripts/arm_device_run.py" "${run_args[@]}" --out "$WORK/x86.json")
records=("$WORK/x86.json")
for cpu in "${CPUS[@]}"; do
  arm_log "ARM device under qemu-aarch64 -cpu $cpu"
  t0=$SECONDS
  (cd "$WORK" && PYTHONPATH="$DEV_PATH" QPART_REQUIRE_EXTENSION=1 arm_python "$cpu" \
    "$ARM_ROOT/scripts/arm_device_run.py" "${run_args[@]}" --out "$WORK/arm-$cpu.json")
  echo "    ($((SECONDS - t0)) s with the emulated torch import)"
  records+=("$WORK/arm-$cpu.json")
done

arm_log "agreement (reference: the x86 device)"
exact=""
for ((i = 2; i < ${#records[@]}; i++)); do exact+="$i,"; done
"$HOST_PY" "$ARM_ROOT/scripts/arm_device_compare.py" "${records[@]}" --exact "$exact"
echo "==> ARM device check passed in $((SECONDS - start)) s"
