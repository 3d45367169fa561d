import ArgumentParser
import Foundation
import SparKV
import SparKVModel

/// `sparkv bench`: decode-attention and prefill benchmarks on synthetic data.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark decode attention and prefill compression on synthetic Llama-shaped KV caches.",
        discussion: """
            Build in release mode first (swift build -c release). Examples:
              sparkv bench decode --shape llama3-8b --contexts 32768 --layers 8
              sparkv bench decode --quick
              sparkv bench prefill --contexts 4096,32768 --threads 1,2 --json prefill.json
            Data comes from SyntheticKV (heavy tails, outlier channels, RoPE). Timings are medians over \
            repeated runs; bandwidth figures are quoted against a streaming-read probe with the same \
            thread count.
            """,
        subcommands: [BenchDecodeCommand.self, BenchPrefillCommand.self]
    )
}

/// Model shape presets.
enum BenchShapePreset: String, CaseIterable, ExpressibleByArgument, Codable {
    case llama3_8b = "llama3-8b"
    case smollm2_135m = "smollm2-135m"

    func shape(capacity: Int) -> ModelShape {
        switch self {
        case .llama3_8b: return .llama3_8B(capacity: capacity)
        case .smollm2_135m: return .smolLM2_135M(capacity: capacity)
        }
    }

    /// RoPE base of the model family (SyntheticKV).
    var ropeBase: Double { self == .llama3_8b ? 500_000 : 10_000 }
}

/// Options shared by `bench decode` and `bench prefill`.
struct BenchOptions: ParsableArguments {
    @Option(help: "Model shape preset: llama3-8b (32 layers, 32 q heads, 8 KV heads, D 128) or smollm2-135m (30, 9, 3, 64).")
    var shape: BenchShapePreset = .llama3_8b

    @Option(name: .customLong("q-heads"), help: "Override the preset's query heads.")
    var qHeads: Int?

    @Option(name: .customLong("kv-heads"), help: "Override the preset's KV heads.")
    var kvHeads: Int?

    @Option(name: .customLong("head-dim"), help: "Override the preset's head dimension D.")
    var headDim: Int?

    @Option(help: "Comma-separated context lengths in tokens (a K suffix means x1024). Default 4096,16384,32768,65536 (--quick: 2048).")
    var contexts: String?

    @Option(help: """
        Comma-separated policies: names (\(BenchPolicies.catalog.map(\.name).joined(separator: ", "))) \
        or compact policy forms as in `sparkv policy` (e.g. snapkv(256)+spark(0.5,gaussian)). \
        Default: \(BenchPolicies.defaultNames.joined(separator: ",")). dense-f16 (the baseline) is always added.
        """)
    var policies: String?

    @Option(help: "Comma-separated OpenMP thread counts to sweep (the policy's threads). Default 1,<cores> (--quick: <cores>).")
    var threads: String?

    @Option(help: "Seed of the synthetic data.")
    var seed: UInt64 = 0

    @Option(help: "Attention kernel: auto, portable, avx2 or avx512.")
    var kernel: KVCache.Kernel = .auto

    @Option(name: .customLong("probe-mib"), help: "Bandwidth-probe buffer in MiB (shrunk if memory is short). Default 1024 (--quick: 128).")
    var probeMiB: Int?

    @Option(help: "Also write the results as JSON to this file.")
    var json: String?

    @Option(help: "Also write the results as CSV to this file (one row per measurement, a 'section' column).")
    var csv: String?

    @Flag(help: "Smoke mode: one small context, few layers and steps, one thread count; finishes in seconds.")
    var quick = false

    func validate() throws {
        _ = try resolvedContexts()
        _ = try resolvedThreads()
        if let probeMiB, probeMiB < 1 { throw ValidationError("--probe-mib must be at least 1") }
        for (flag, value) in [("--q-heads", qHeads), ("--kv-heads", kvHeads), ("--head-dim", headDim)] {
            if let value, value < 1 { throw ValidationError("\(flag) must be at least 1") }
        }
        do {
            _ = try BenchPolicies.resolve(policyNames())
        } catch {
            throw ValidationError("--policies: \(error)")
        }
    }

    /// The shape with the overrides; `layers` and `capacity` are set by the caller.
    func modelShape(layers: Int? = nil, capacity: Int) -> ModelShape {
        var s = shape.shape(capacity: capacity)
        if let layers { s.layers = layers }
        if let qHeads { s.queryHeads = qHeads }
        if let kvHeads { s.kvHeads = kvHeads }
        if let headDim { s.headDim = headDim }
        return s
    }

    func resolvedContexts() throws -> [Int] {
        guard let contexts else { return quick ? [2048] : [4096, 16384, 32768, 65536] }
        return try benchList(contexts, flag: "--contexts") { text in
            let t = text.lowercased()
            // "9999999999999999k" must be rejected, not overflow
            let n = t.hasSuffix("k") ? Int(t.dropLast()).flatMap { k in
                let (n, overflow) = k.multipliedReportingOverflow(by: 1024)
                return overflow ? nil : n
            } : Int(t)
            guard let n, n >= 64 else { return nil }
            return n
        }
    }

    func resolvedThreads() throws -> [Int] {
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        guard let threads else {
            if quick { return [cores] }
            return cores > 1 ? [1, cores] : [1]
        }
        return try benchList(threads, flag: "--threads") {
            Int($0).flatMap { (1...ModelLimits.maxThreads).contains($0) ? $0 : nil }
        }
    }

    func policyNames() -> [String]? {
        policies.map(BenchPolicies.split)
    }

    var resolvedProbeMiB: Int { probeMiB ?? (quick ? 128 : 1024) }
}

/// Parses a comma-separated list; every element must convert.
func benchList<T>(_ text: String, flag: String, _ convert: (String) -> T?) throws -> [T] {
    let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    guard !items.isEmpty else { throw ValidationError("\(flag) is empty") }
    return try items.map { item in
        guard let value = convert(item) else { throw ValidationError("\(flag): '\(item)' is not valid") }
        return value
    }
}
