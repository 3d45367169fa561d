#!/usr/bin/env bash
# Installs what SparKV needs on a fresh Debian 12 machine, and nothing when it is already there.
# Sourced by demo.sh and test.sh.
set -euo pipefail

sparkv_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# OpenMP for clang: omp.h in a versioned LLVM folder and libomp.so beside it (any LLVM version;
# Package.swift and the Makefile pick the newest), unless SPARKV_OMP_INCLUDE names another place.
sparkv_have_libomp() {
    [ -n "${SPARKV_OMP_INCLUDE:-}" ] && [ -e "$SPARKV_OMP_INCLUDE/omp.h" ] && return 0
    for d in /usr/lib/llvm-*/lib/clang/*/include; do
        [ -e "$d/omp.h" ] && [ -e "$(dirname "$(dirname "$(dirname "$d")")")/libomp.so" ] && return 0
    done
    return 1
}

if ! sparkv_have_libomp; then
    echo "[sparkv] installing libomp-dev (OpenMP runtime and header)" >&2
    sparkv_sudo apt-get update -qq
    sparkv_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libomp-dev >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"
    else echo "[sparkv] Swift 6 is required (expected at /opt/swift)" >&2; exit 1; fi
fi
