import ArgumentParser
import Foundation
import SparKV

/// `sparkv demo`: memory and attention error of SparK vs dense on a synthetic Llama-shaped cache.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Compress a synthetic Llama-3-8B-shaped KV cache with SparK and compare it with dense fp16.",
        discussion: """
            Builds a cache of the Llama-3-8B attention shape (32 query heads, 8 KV heads, D = 128) filled \
            with SyntheticKV data (outlier channels, heavy tails, RoPE), prefills the prompt, appends decode \
            tokens, and for the policies dense, spark r=0.5 and spark r=0.8 (MEAN recovery with sign bits, \
            f16) prints the exact bytes held, the key bytes per token against the formula, and the error of \
            one decode attention against exact attention computed in double.
            """
    )

    @Option(help: "Transformer layers to build.")
    var layers = 2

    @Option(name: .customLong("prompt-tokens"), help: "Prompt tokens prefilled per layer.")
    var promptTokens = 4096

    @Option(name: .customLong("decode-tokens"), help: "Decode tokens appended per layer after the prompt.")
    var decodeTokens = 16

    @Option(help: "Seed of the synthetic data.")
    var seed: UInt64 = 0

    @Option(help: "OpenMP threads (default: OpenMP's default, i.e. OMP_NUM_THREADS or the core count).")
    var threads: Int?

    @Option(help: "Attention kernel: auto, portable, avx2 or avx512.")
    var kernel: KVCache.Kernel = .auto

    @Option(help: "Observation-window queries used to measure channel importance.")
    var window = 32

    @Flag(help: "Print the results as JSON.")
    var json = false

    /// Most layers and tokens accepted before the memory estimate; they keep its products far from
    /// overflowing (the estimate, not these, is the real limit).
    static let maxLayers = 4096
    static let maxTokens = 1 << 30

    func validate() throws {
        guard (1...Self.maxLayers).contains(layers) else {
            throw ValidationError("--layers must be in 1...\(Self.maxLayers)")
        }
        guard (1...Self.maxTokens).contains(promptTokens) else {
            throw ValidationError("--prompt-tokens must be in 1...\(Self.maxTokens)")
        }
        guard (0...Self.maxTokens).contains(decodeTokens) else {
            throw ValidationError("--decode-tokens must be in 0...\(Self.maxTokens)")
        }
        guard window >= 1 else { throw ValidationError("--window must be at least 1") }
        try ModelArguments.validateThreads(threads)
        let needed = Self.estimatedBytes(layers: layers, tokens: promptTokens + decodeTokens)
        let available = Self.physicalMemory()
        if available > 0, needed > available {
            throw ValidationError("--layers \(layers) with \(promptTokens) prompt + \(decodeTokens) decode tokens needs "
                                  + "about \(gib(needed)) GiB, more than this machine's \(gib(available)) GiB of memory")
        }
    }

    /// A generous estimate of the demo's memory: per layer, the synthetic keys and values of every
    /// token and their prompt copies (float), plus three caches of at most dense fp16 size over
    /// all layers.
    static func estimatedBytes(layers: Int, tokens: Int) -> Int {
        let shape = ModelShape.llama3_8B(capacity: 1)
        let perTokenHead = shape.kvHeads * shape.headDim
        return tokens * perTokenHead * (4 * 4 + layers * 3 * 2 * 2)
    }

    /// Physical memory in bytes, 0 if unknown.
    static func physicalMemory() -> Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return 0 }
        return pages.multipliedReportingOverflow(by: size).overflow ? Int.max : pages * size
    }

    func run() throws {
        let started = Date()
        let totalTokens = promptTokens + decodeTokens
        var shape = ModelShape.llama3_8B(capacity: totalTokens)
        shape.layers = layers
        let presets: [(String, CompressionPolicy)] = [
            ("dense", .dense), ("spark r=0.5", .spark(ratio: 0.5)), ("spark r=0.8", .spark(ratio: 0.8)),
        ]
        let policies = presets.map { name, policy in
            var policy = policy
            policy.threads = threads
            policy.window = window
            return (name, policy)
        }
        let caches = try policies.map { try KVCache(shape: shape, policy: $0.1) }
        for cache in caches { try cache.setKernel(kernel) }

        let data = SyntheticKV(shape: shape, seed: seed)
        let d = shape.headDim, kv = shape.kvHeads
        let windowCount = min(window, promptTokens)
        var afterPrefill = [MemoryReport](repeating: MemoryReport.zero, count: caches.count)
        var errors = [[Double]](repeating: [], count: caches.count)

        for layer in 0..<layers {
            // Keys and values of every token; the prompt part is cut out per head.
            let allKeys = data.keys(layer: layer, tokens: 0..<totalTokens)
            let allValues = data.values(layer: layer, tokens: 0..<totalTokens)
            let promptKeys = promptSlice(allKeys, heads: kv, total: totalTokens, prompt: promptTokens, headDim: d)
            let promptValues = promptSlice(allValues, heads: kv, total: totalTokens, prompt: promptTokens, headDim: d)
            let windowQueries = data.queries(layer: layer, positions: promptTokens - windowCount..<promptTokens)
            for (i, cache) in caches.enumerated() {
                try cache.prefill(layer: layer, keys: promptKeys, values: promptValues, windowQueries: windowQueries,
                                  tokenCount: promptTokens, windowCount: windowCount)
                afterPrefill[i] = afterPrefill[i] + (try cache.memoryReport(layer: layer))
            }
            for t in promptTokens..<totalTokens {
                let k = tokenSlice(allKeys, token: t, heads: kv, total: totalTokens, headDim: d)
                let v = tokenSlice(allValues, token: t, heads: kv, total: totalTokens, headDim: d)
                for cache in caches { try cache.append(layer: layer, keys: k, values: v) }
            }
            // One decode query, at the position of the last token held.
            let query = data.queries(layer: layer, positions: totalTokens - 1..<totalTokens)
            let exact = referenceAttention(shape: shape, query: query, keys: allKeys, values: allValues,
                                           tokenCount: totalTokens, scale: 1 / Double(d).squareRoot())
            for (i, cache) in caches.enumerated() {
                let out = try cache.attend(layer: layer, query: query)
                errors[i] += relativeErrors(approx: out, exact: exact, heads: shape.queryHeads, headDim: d)
            }
        }

        var rows: [DemoReport.Row] = []
        for (i, (name, policy)) in policies.enumerated() {
            let memory = try caches[i].memoryReport()
            let headMeta = policy.headMetadataBytes(headDim: d) * kv * layers
            let promptTokenHeads = Double(promptTokens * kv * layers)
            let measured = Double(afterPrefill[i].keyBytes + afterPrefill[i].keyMetaBytes - headMeta) / promptTokenHeads
            let predicted = policy.promptKeyBytesPerToken(headDim: d)
            rows.append(DemoReport.Row(
                name: name, policy: policy, memory: memory,
                percentOfDense: memory.ratioToDense * 100, keyBytesPerToken: measured,
                predictedKeyBytesPerToken: predicted,
                matchesFormula: predicted.map { matches(memory, shape: shape, policy: policy, promptKeyBytes: $0) } ?? false,
                maxRelativeError: errors[i].max() ?? 0,
                meanRelativeError: errors[i].reduce(0, +) / Double(max(1, errors[i].count))))
        }
        let report = DemoReport(
            version: KVCache.libraryVersion, shape: shape, promptTokens: promptTokens, decodeTokens: decodeTokens,
            seed: seed, kernel: caches[0].kernel.name, threads: caches[0].threadCount,
            threadsAreDefault: threads == nil, seconds: Date().timeIntervalSince(started), rows: rows)
        print(json ? try report.json() : report.table())
        if rows.contains(where: { !$0.matchesFormula }) {
            printError("sparkv demo: the memory report does not match the formula (see MISMATCH above)")
            throw ExitCode.failure
        }
    }

    /// Whether every byte count of the final report is what the header's formulas predict.
    private func matches(_ m: MemoryReport, shape: ModelShape, policy: CompressionPolicy, promptKeyBytes: Int) -> Bool {
        let d = shape.headDim, layerHeads = shape.layers * shape.kvHeads
        let totalTokens = promptTokens + decodeTokens
        let kb = policy.keyPrecision.byteCount, vb = policy.valuePrecision.byteCount
        let prunes = policy.prunes(headDim: d)
        let keptBytes = prunes ? policy.keptChannels(headDim: d) * kb : d * kb
        let metaPerToken = promptKeyBytes - keptBytes
        let keyBytes = layerHeads * (promptTokens * keptBytes + decodeTokens * d * kb)
        let metaBytes = layerHeads * (promptTokens * metaPerToken + policy.headMetadataBytes(headDim: d))
        let valueBytes = layerHeads * totalTokens * d * vb
        return m.tokenCount == shape.layers * totalTokens && m.keyBytes == keyBytes && m.keyMetaBytes == metaBytes
            && m.valueBytes == valueBytes && m.totalBytes == keyBytes + metaBytes + valueBytes
            && m.denseBytes == layerHeads * totalTokens * d * 4 && m.reservedBytes >= m.totalBytes
    }
}

private func gib(_ bytes: Int) -> String { String(format: "%.1f", Double(bytes) / Double(1 << 30)) }

/// `[heads][total][D]` -> `[heads][prompt][D]`, the first `prompt` tokens of every head.
private func promptSlice(_ x: [Float], heads: Int, total: Int, prompt: Int, headDim d: Int) -> [Float] {
    var out: [Float] = []
    out.reserveCapacity(heads * prompt * d)
    for h in 0..<heads { out += x[h * total * d..<(h * total + prompt) * d] }
    return out
}

/// The `[heads][D]` rows of token `t` from `[heads][total][D]`.
private func tokenSlice(_ x: [Float], token t: Int, heads: Int, total: Int, headDim d: Int) -> [Float] {
    var out: [Float] = []
    out.reserveCapacity(heads * d)
    for h in 0..<heads { out += x[(h * total + t) * d..<(h * total + t + 1) * d] }
    return out
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

extension MemoryReport {
    static let zero = MemoryReport(tokenCount: 0, keyBytes: 0, keyMetaBytes: 0, valueBytes: 0, totalBytes: 0,
                                   denseBytes: 0, reservedBytes: 0)

    static func + (a: MemoryReport, b: MemoryReport) -> MemoryReport {
        MemoryReport(tokenCount: a.tokenCount + b.tokenCount, keyBytes: a.keyBytes + b.keyBytes,
                     keyMetaBytes: a.keyMetaBytes + b.keyMetaBytes, valueBytes: a.valueBytes + b.valueBytes,
                     valueMetaBytes: a.valueMetaBytes + b.valueMetaBytes, totalBytes: a.totalBytes + b.totalBytes, denseBytes: a.denseBytes + b.denseBytes,
                     reservedBytes: a.reservedBytes + b.reservedBytes)
    }
}
