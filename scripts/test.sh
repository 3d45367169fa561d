#!/usr/bin/env bash
# The README's test command: every test of the project.
#   1. swift test           — the Swift suite (kernels against the naive reference, Swift API, policies,
#                              and the real model: GGUF reader, tokenizer, forward pass)
#   2. make check           — C library, symbol check, header check, the C tests under ASan/UBSan
#                              (API test, defect regressions, differential test of every kernel against
#                              the float64 reference), the C example, and the Python binding's pytest suite
#   3. make test-tsan        — concurrent API calls under ThreadSanitizer
#   4. scripts/test-consumer.sh — a package depending on SparKV by version (a local tag) builds and runs;
#      scripts/test-pip-install.sh — `pip install ./python` in a fresh venv, then the README's Python example
#   5. make fuzz-api         — the C API libFuzzer target: corpus replay, then FUZZ_SECONDS (60) of fuzzing
#   6. make fuzz-persist     — the saved-cache loader's libFuzzer target: corpus replay, then FUZZ_SECONDS (60)
#   7. scripts/fuzz-gguf.sh  — the GGUF reader's libFuzzer target: corpus replay, then 60 s of fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh

# ml_dtypes: the binding's bfloat16 arrays are tested with it (the binding itself does not need it)
if ! python3 -c "import numpy, pytest, ml_dtypes" >/dev/null 2>&1; then
    echo "[sparkv] installing numpy, pytest and ml_dtypes for the Python binding's tests" >&2
    python3 -m pip install -q numpy pytest ml_dtypes
fi

# the model tests (GGUF reader, tokenizer, forward pass) run on the real models: SmolLM2 (98 MB),
# and Qwen2.5-Coder-1.5B (1.1 GB) and Gemma 3 270M (253 MB) for their architectures and tokenizers
for model in smollm2-135m qwen2.5-coder-1.5b gemma-3-270m; do
    scripts/fetch-model.sh "$model" >/dev/null
done

echo "== swift test"
set +e
swift test 2>&1 | grep --line-buffered -vE '^\[[0-9]+/[0-9]+\] (Compiling|Write|Emitting|Linking)'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then echo "swift test FAILED (exit $status)" >&2; exit "$status"; fi

echo "== make check"
make check

echo "== make test-tsan"
make test-tsan

echo "== scripts/test-consumer.sh"
scripts/test-consumer.sh

echo "== scripts/test-pip-install.sh"
scripts/test-pip-install.sh

# A fixed fuzzing seed, so that a run (and a CI failure) is reproducible; FUZZ_SEED=0 fuzzes from a
# random one.
echo "== make fuzz-api"
make fuzz-api FUZZ_SECONDS="${FUZZ_SECONDS:-60}" FUZZ_SEED="${FUZZ_SEED:-1}"

echo "== make fuzz-persist"
make fuzz-persist FUZZ_SECONDS="${FUZZ_SECONDS:-60}" FUZZ_SEED="${FUZZ_SEED:-1}"

echo "== scripts/fuzz-gguf.sh"
FUZZ_SEED="${FUZZ_SEED:-1}" scripts/fuzz-gguf.sh "${FUZZ_SECONDS:-60}"
echo "== all SparKV tests passed"
