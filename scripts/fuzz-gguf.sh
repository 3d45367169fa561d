#!/usr/bin/env bash
# libFuzzer run of the GGUF reader and the model loader's checks (Tests/Fuzz/GGUF/FuzzGGUF.swift).
#
#   scripts/fuzz-gguf.sh [seconds]     # default 60
#
# 1. Builds the target with swiftc -sanitize=fuzzer,address into .build-fuzz/gguf/ (git-ignored):
#    the pure-Swift file-reading sources of SparKVModel plus the fuzz entry point, as one module.
# 2. Replays Tests/Fuzz/GGUF/corpus/ (seeds and regression inputs): each file once.
# 3. Fuzzes for the given seconds, inputs up to 64 KiB, starting from that corpus; new inputs go
#    to .build-fuzz/gguf/corpus/ (kept between runs), crashes to .build-fuzz/gguf/crash-*.
# Exits non-zero on any crash, leak, timeout or out-of-memory. A crashing input belongs in
# Tests/Fuzz/GGUF/corpus/ as regress-<what>.bin once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh

SECONDS_TO_RUN="${1:-60}"
case "$SECONDS_TO_RUN" in ''|*[!0-9]*) echo "usage: scripts/fuzz-gguf.sh [seconds]" >&2; exit 2 ;; esac

OUT=.build-fuzz/gguf
SEEDS=Tests/Fuzz/GGUF/corpus
mkdir -p "$OUT/corpus"

# The reader, the config and tensor table, and the tokenizer: Foundation-free Swift, no C kernels.
SOURCES=(
    Sources/SparKVModel/GGUFError.swift Sources/SparKVModel/GGUFFile.swift Sources/SparKVModel/GGUFTensor.swift
    Sources/SparKVModel/GGUFValue.swift Sources/SparKVModel/LlamaConfig.swift Sources/SparKVModel/ModelError.swift
    Sources/SparKVModel/Tokenizer.swift Sources/SparKVModel/TokenizerByteLevel.swift
    Sources/SparKVModel/TokenizerChat.swift Sources/SparKVModel/TokenizerPreTokenizer.swift
    Sources/SparKVModel/TokenizerSentencePiece.swift Sources/SparKVModel/ChatFormat.swift
    Sources/SparKVModel/ModelArchitecture.swift
    Tests/Fuzz/GGUF/FuzzGGUF.swift
)
echo "[fuzz-gguf] building $OUT/fuzz-gguf (swiftc -sanitize=fuzzer,address)" >&2
# (gold warns once per ASan helper symbol that it cannot export it: noise, filtered out)
swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name SparKVModel \
    "${SOURCES[@]}" -o "$OUT/fuzz-gguf" 2>&1 | { grep -v "Cannot export local symbol" || true; } >&2

# Limits: 64 KiB inputs hold a whole tiny model; 10 s per input and 2 GiB of memory are far above
# what any input needs, so hitting them is a finding (a hang or an unbounded allocation).
LIMITS=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024)

echo "[fuzz-gguf] replaying $SEEDS ($(ls "$SEEDS" | wc -l) inputs)" >&2
status=0
"$OUT/fuzz-gguf" "${LIMITS[@]}" "$SEEDS"/* >"$OUT/replay.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
    tail -n 60 "$OUT/replay.log" >&2
    echo "[fuzz-gguf] a corpus input crashes (exit $status; log: $OUT/replay.log)" >&2
    exit 1
fi
echo "[fuzz-gguf] replay: $(grep -c '^Executed' "$OUT/replay.log") inputs, no crash" >&2

echo "[fuzz-gguf] fuzzing for $SECONDS_TO_RUN s" >&2
# FUZZ_SEED: libFuzzer's seed (0, the default, picks a random one; the test command fixes it so
# that a CI run is reproducible).
"$OUT/fuzz-gguf" "${LIMITS[@]}" -max_len=65536 -max_total_time="$SECONDS_TO_RUN" -seed="${FUZZ_SEED:-0}" -print_final_stats=1 \
    -artifact_prefix="$OUT/" "$OUT/corpus" "$SEEDS"
echo "[fuzz-gguf] no crash in $SECONDS_TO_RUN s" >&2
