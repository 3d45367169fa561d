#!/usr/bin/env bash
# Installs what SparKV needs on a fresh Debian 12 machine, and nothing when it is already there.
# Sourced by demo.sh and test.sh.
set -euo pipefail

sparkv_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -e /usr/lib/llvm-14/lib/libomp.so ] || [ ! -e /usr/lib/llvm-14/lib/clang/14.0.6/include/omp.h ]; then
    echo "[sparkv] installing libomp-dev (OpenMP runtime and header)" >&2
    sparkv_sudo apt-get update -qq
    sparkv_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libomp-dev >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"
    else echo "[sparkv] Swift 6 is required (expected at /opt/swift)" >&2; exit 1; fi
fi
