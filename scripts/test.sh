#!/usr/bin/env bash
# The README's test command: every test of the project.
#   1. swift test           — the Swift suite (kernels against the naive reference, Swift API, policies,
#                              and the real model: GGUF reader, tokenizer, forward pass)
#   2. make check           — C library, symbol check, header check, C API test under ASan/UBSan,
#                              the C example, and the Python binding's pytest suite
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh

if ! python3 -c "import numpy, pytest" >/dev/null 2>&1; then
    echo "[sparkv] installing numpy and pytest for the Python binding's tests" >&2
    python3 -m pip install -q numpy pytest
fi

# the model tests (GGUF reader, tokenizer, forward pass) run on the real model
scripts/fetch-model.sh >/dev/null

echo "== swift test"
set +e
swift test 2>&1 | grep --line-buffered -vE '^\[[0-9]+/[0-9]+\] (Compiling|Write|Emitting|Linking)'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then echo "swift test FAILED (exit $status)" >&2; exit "$status"; fi

echo "== make check"
make check
echo "== all SparKV tests passed"
