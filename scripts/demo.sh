#!/usr/bin/env bash
# The README's main job: the real model (SmolLM2-135M-Instruct, fetched once into models/) runs one
# long prompt through dense, SnapKV and SnapKV + SparK caches; then the synthetic Llama-3-8B-shaped
# cache demo prints bytes and attention error for dense vs SparK 0.5 vs 0.8. Extra arguments go to
# `sparkv model-demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
scripts/fetch-model.sh >/dev/null
swift build -c release --product sparkv >&2
.build/release/sparkv model-demo "$@"
echo
exec .build/release/sparkv demo
