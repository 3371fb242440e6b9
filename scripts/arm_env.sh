#!/usr/bin/env bash
# Shared helpers for the aarch64 scripts (sourced, not run): a cache folder, a private apt
# setup that downloads Debian arm64 packages without touching the host's dpkg state, the
# aarch64 torch from PyPI, and an aarch64 Python sysroot that runs under qemu-aarch64.
#
# Environment:
#   QPART_ARM_CACHE   downloads, sysroot and target dirs (default ~/.cache/qpart-arm)
#   QPART_ARM_TORCH   aarch64 torch version (default 2.9.1: the newest CPU-only aarch64
#                     wheel on PyPI; 2.10+ aarch64 wheels there are CUDA builds that need
#                     the nvidia-* aarch64 wheels, which are not all on PyPI)
#   QPART_VENV        x86 venv whose pip downloads and builds (default <repo>/.venv, else python3)

ARM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARM_CACHE="${QPART_ARM_CACHE:-$HOME/.cache/qpart-arm}"
ARM_TORCH="${QPART_ARM_TORCH:-2.9.1}"
ARM_PY=3.11  # Debian bookworm's python3.11 (arm64) runs the device
ARM_SYSROOT="$ARM_CACHE/sysroot"
ARM_SITE="$ARM_CACHE/site-torch-$ARM_TORCH"
ARM_PIP_PLATFORM=(--platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --python-version "$ARM_PY"
  --implementation cp --only-binary=:all:)
# Debian arm64 packages for python3.11 and the libraries torch and the stdlib need.
ARM_DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11
  libpython3.11-dev libc6 libgcc-s1 libstdc++6 libgomp1 libexpat1 zlib1g libffi8 libssl3
  libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libcrypt1
  libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1
  libcom-err2 libdb5.3 libgdbm6 libzstd1 media-types)

if [[ -n "${QPART_VENV:-}" ]]; then
  HOST_PY="$QPART_VENV/bin/python"
elif [[ -x "$ARM_ROOT/.venv/bin/python" ]]; then
  HOST_PY="$ARM_ROOT/.venv/bin/python"
else
  HOST_PY="$(command -v python3)"
fi

# shellcheck source=scripts/apt_deps.sh
source "$ARM_ROOT/scripts/apt_deps.sh"

arm_log() { echo "==> [${SECONDS}s] $*"; }
arm_die() {
  echo "error: $*" >&2
  exit 1
}

# The cross compiler and qemu from the host's Debian packages; an x86 Python with pip,
# setuptools and wheel (the venv of scripts/setup_env.sh also runs the server).
arm_host_tools() {
  "$HOST_PY" -c 'import setuptools, wheel, pip' 2>/dev/null ||
    arm_die "$HOST_PY lacks pip/setuptools/wheel: run scripts/setup_env.sh or set QPART_VENV"
  apt_install_if_missing aarch64-linux-gnu-g++ g++-aarch64-linux-gnu
  apt_install_if_missing qemu-aarch64 qemu-user
  apt_install_if_missing unzip unzip
}

# arm_apt ARGS...: apt-get against a private arm64 package list under the cache.
arm_apt() {
  local d="$ARM_CACHE/apt"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/prefs.d" "$d/debs"
  if [[ ! -f "$d/sources.list" ]]; then
    local kr=/usr/share/keyrings/debian-archive-keyring.gpg
    printf '%s\n' \
      "deb [arch=arm64 signed-by=$kr] http://deb.debian.org/debian bookworm main" \
      "deb [arch=arm64 signed-by=$kr] http://deb.debian.org/debian-security bookworm-security main" \
      >"$d/sources.list"
  fi
  touch "$d/status"
  apt-get -q -o APT::Architecture=arm64 -o APT::Architectures::=arm64 \
    -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State::Lists="$d/lists" -o Dir::State::Status="$d/status" \
    -o Dir::Cache="$d/cache" -o Dir::Etc::Preferences="$d/prefs" \
    -o Dir::Etc::PreferencesParts="$d/prefs.d" -o Debug::NoLocking=1 "$@"
}

# An aarch64 python3.11 sysroot from Debian's arm64 packages (dpkg -x, no VM, no chroot).
arm_sysroot() {
  if [[ -x "$ARM_SYSROOT/usr/bin/python$ARM_PY" && -f "$ARM_SYSROOT/.complete" ]]; then
    return 0
  fi
  arm_log "Debian arm64 packages for python$ARM_PY -> $ARM_SYSROOT"
  arm_apt update >/dev/null 2>&1 || arm_die "apt-get update (arm64 lists) failed"
  (cd "$ARM_CACHE/apt/debs" && arm_apt download "${ARM_DEBS[@]}" >"$ARM_CACHE/apt/download.log" 2>&1) ||
    arm_die "apt-get download failed; see $ARM_CACHE/apt/download.log"
  rm -rf "$ARM_SYSROOT"
  mkdir -p "$ARM_SYSROOT"
  local deb
  for deb in "$ARM_CACHE"/apt/debs/*.deb; do dpkg -x "$deb" "$ARM_SYSROOT"; done
  touch "$ARM_SYSROOT/.complete"
}

# The aarch64 torch wheel (no deps: pip would evaluate torch's CUDA markers for the host).
arm_torch_wheel() {
  mkdir -p "$ARM_CACHE/wheels"
  local w=("$ARM_CACHE"/wheels/torch-"$ARM_TORCH"-cp311-*aarch64.whl)
  if [[ ! -f "${w[0]}" ]]; then
    arm_log "pip download torch==$ARM_TORCH (aarch64)"
    "$HOST_PY" -m pip download -q "${ARM_PIP_PLATFORM[@]}" --no-deps "torch==$ARM_TORCH" \
      -d "$ARM_CACHE/wheels"
    w=("$ARM_CACHE"/wheels/torch-"$ARM_TORCH"-cp311-*aarch64.whl)
  fi
  ARM_TORCH_WHEEL="${w[0]}"
  [[ -f "$ARM_TORCH_WHEEL" ]] || arm_die "no aarch64 torch $ARM_TORCH wheel"
}

# qemu-aarch64 running the sysroot's python: arm_python CPU ARGS...
arm_python() {
  local cpu="$1"
  shift
  qemu-aarch64 -L "$ARM_SYSROOT" -cpu "$cpu" "$ARM_SYSROOT/usr/bin/python$ARM_PY" "$@"
}
