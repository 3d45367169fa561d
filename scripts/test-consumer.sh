#!/usr/bin/env bash
# The consumer case: a throwaway Swift package that depends on SparKV *by version*
# (.package(url:, from:)), as a user's package would, builds and runs. The checkout's HEAD is
# cloned and tagged with the header's version, so this tests what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh

version=$(sed -n 's/^#define SPARKV_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' include/sparkv.h | paste -sd.)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet . "$work/sparkv"
git -C "$work/sparkv" tag "$version"

mkdir -p "$work/consumer/Sources/consumer"
cat > "$work/consumer/Package.swift" <<SWIFT
// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "consumer",
    dependencies: [.package(url: "file://$work/sparkv", from: "$version")],
    targets: [.executableTarget(name: "consumer", dependencies: [.product(name: "SparKV", package: "sparkv")])]
)
SWIFT
cat > "$work/consumer/Sources/consumer/main.swift" <<'SWIFT'
import SparKV

// One layer of a small GQA shape: prefill 300 tokens under SparK r = 0.8, append one, attend.
let shape = ModelShape(layers: 1, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 512)
let n = 300, w = 32, d = 64
struct Numbers {
    var state: UInt64 = 1
    /// count values in [-1, 1] from a linear congruential generator.
    mutating func take(_ count: Int) -> [Float] {
        (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(state >> 11) % 2001 - 1000) / 1000
        }
    }
}
var numbers = Numbers()
let keys = numbers.take(2 * n * d), values = numbers.take(2 * n * d), window = numbers.take(4 * w * d)
let cache = try KVCache(shape: shape, policy: .spark(ratio: 0.8))
try cache.prefill(layer: 0, keys: keys, values: values, windowQueries: window, tokenCount: n, windowCount: w)
try cache.append(layer: 0, keys: numbers.take(2 * d), values: numbers.take(2 * d))
let out = try cache.attend(layer: 0, query: numbers.take(4 * d))
guard out.count == 4 * d, out.allSatisfy({ $0.isFinite }) else { fatalError("bad attention output") }
let ratio = try cache.memoryReport().ratioToDense
print("consumer: SparKV by version works: \(out.count) outputs, cache at \(ratio) of dense f32")
SWIFT

echo "[consumer] building a package that depends on SparKV from: \"$version\"" >&2
(cd "$work/consumer" && swift build -q && swift run -q consumer)
