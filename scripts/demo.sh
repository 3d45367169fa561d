#!/usr/bin/env bash
# The README's main job: a decode demo on a built-in synthetic Llama-shaped cache.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
swift build -c release --product sparkv >&2
exec .build/release/sparkv demo "$@"
