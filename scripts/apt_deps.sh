#!/usr/bin/env bash
# apt_install_if_missing FILE PACKAGE... : installs Debian packages when FILE is absent.
# Sourced by the test scripts; needs root (or sudo) and access to Debian's package mirrors.

apt_install_if_missing() {
  local probe="$1"
  shift
  if [[ -e "$probe" ]] || command -v "$probe" >/dev/null 2>&1; then
    return 0
  fi
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then sudo=(sudo); fi
  echo "==> apt-get install $*"
  if ! "${sudo[@]}" apt-get install -y --no-install-recommends "$@" >/dev/null; then
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y --no-install-recommends "$@" >/dev/null
  fi
}
