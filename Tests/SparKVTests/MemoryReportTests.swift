// MemoryReportTests.swift — sparkv_memory_report against the byte formula of common.md.

import CSparKV
import Testing

struct MemoryCase: Sendable, CustomStringConvertible {
    var name: String
    var config: RefConfig
    var n: Int
    var appends: Int
    var description: String { "\(name): \(config) n=\(n) appends=\(appends)" }
}

@Suite("Memory report")
struct MemoryReportTests {
    static let cases: [MemoryCase] = {
        var out: [MemoryCase] = []
        out.append(MemoryCase(name: "dense f16", config: RefConfig(nQ: 4, nKV: 2, D: 128, r: 0), n: 300, appends: 3))
        out.append(MemoryCase(name: "dense f32/bf16", config: RefConfig(nQ: 3, nKV: 1, D: 64, r: 0, keyPrecision: .f32,
                                                                        valuePrecision: .bf16), n: 520, appends: 0))
        out.append(MemoryCase(name: "r=0.5 mean signs", config: RefConfig(nQ: 2, nKV: 2, D: 128, r: 0.5), n: 300, appends: 2))
        out.append(MemoryCase(name: "r=0.8 mean signs", config: RefConfig(nQ: 2, nKV: 2, D: 128, r: 0.8), n: 520, appends: 5))
        for recovery in RefRecovery.allCases {
            for cumulative in [false, true] {
                out.append(MemoryCase(
                    name: "\(cumulative ? "cumulative" : "topk") \(recovery)",
                    config: RefConfig(nQ: 4, nKV: 2, D: cumulative ? 64 : 40, r: 0.7, cumulative: cumulative, p: 0.8,
                                      recovery: recovery, signs: recovery != .none && !cumulative,
                                      keyPrecision: cumulative ? .bf16 : .f32, valuePrecision: .f16, window: 16),
                    n: 270, appends: 4))
            }
        }
        out.append(MemoryCase(name: "topk f16 D=8 gaussian no signs",
                              config: RefConfig(nQ: 1, nKV: 1, D: 8, r: 0.5, recovery: .gaussian, signs: false),
                              n: 600, appends: 1))
        return out
    }()

    @Test("memory report equals the formula per layer and in total", arguments: cases)
    func memoryReportMatchesFormula(_ tc: MemoryCase) throws {
        // layer 0 and 1 prefilled (different data), layer 2 empty
        let cache = try CCache(tc.config, layers: 3, capacity: 1024)
        var refs: [RefLayer] = []
        for layer in 0..<2 {
            let prompt = TestData.prompt(config: tc.config, n: tc.n - layer * 7, nWindow: 20,
                                         kind: layer == 0 ? .random : .outlier, seed: UInt64(layer) + 3)
            try cache.prefill(layer: layer, prompt)
            var ref = RefLayer(config: tc.config, layer: layer, prompt: prompt)
            for a in 0..<(tc.appends + layer) {
                let tok = TestData.appendToken(config: tc.config, seed: UInt64(a))
                try cache.append(layer: layer, keys: tok.keys, values: tok.values)
                ref.append(keys: tok.keys, values: tok.values)
            }
            refs.append(ref)
        }
        var total = RefMemory()
        for layer in 0..<3 {
            let got = try cache.memory(layer: UInt32(layer))
            let want = layer < 2 ? refs[layer].memory : RefMemory()
            // n_tokens is pinned separately (memoryReportCountsTokensPerKVHead)
            #expect(got.formulaPart.bytesOnly == want.bytesOnly, "layer \(layer): got \(got), want \(want)")
            #expect(got.reservedBytes >= got.totalBytes)
            #expect(got.totalBytes == got.keyBytes + got.keyMetaBytes + got.valueBytes)
            total = total + want
        }
        let all = try cache.memory()
        #expect(all.formulaPart.bytesOnly == total.bytesOnly, "all layers: got \(all), want \(total)")
        #expect(all.reservedBytes >= all.totalBytes)
        let perLayerReserved = try (0..<3).reduce(UInt64(0)) { $0 + (try cache.memory(layer: UInt32($1))).reservedBytes }
        #expect(all.reservedBytes >= perLayerReserved)
    }

    @Test("r = 0.8, D = 128, f16, MEAN with signs stores 86 bytes of K and metadata per token")
    func meanWithSignsAtR08UsesEightySixBytesPerToken() throws {
        let cfg = RefConfig(nQ: 8, nKV: 2, D: 128, r: 0.8, recovery: .mean, signs: true)
        let cache = try CCache(cfg)
        let n = 300
        try cache.prefill(layer: 0, TestData.prompt(config: cfg, n: n, nWindow: 32, kind: .random, seed: 1))
        let m = try cache.memory(layer: 0)
        let perHeadMeta = UInt64(128 * 4 + 4)
        let perToken = (m.keyBytes + m.keyMetaBytes - 2 * perHeadMeta) / UInt64(n * 2)
        #expect(perToken == 86)
        #expect(m.keyBytes == UInt64(n * 2 * 26 * 2))
        #expect(m.keyMetaBytes == UInt64(n * 2 * (16 + 16 + 2)) + 2 * perHeadMeta)
        #expect(m.valueBytes == UInt64(n * 2 * 128 * 2))
        #expect(m.denseBytes == UInt64(n * 2 * 128 * 4))
        #expect(m.totalBytes < m.denseBytes)
    }

    @Test("cumulative key bytes are the sum of the kept-mask popcounts", arguments: [RefPrecision.f16, .f32])
    func cumulativeKeyBytesEqualSumOfMaskPopcounts(_ precision: RefPrecision) throws {
        let cfg = RefConfig(nQ: 3, nKV: 3, D: 64, cumulative: true, p: 0.9, recovery: .exponential, signs: true,
                            keyPrecision: precision, window: 8)
        let cache = try CCache(cfg)
        let n = 280
        try cache.prefill(layer: 0, TestData.prompt(config: cfg, n: n, nWindow: 8, kind: .outlier, seed: 6))
        let tok = TestData.appendToken(config: cfg, seed: 1)
        try cache.append(layer: 0, keys: tok.keys, values: tok.values)
        var kept = 0
        var counts = Set<Int>()
        for h in 0..<3 {
            for t in 0..<n {
                let c = try cache.inspectKey(layer: 0, head: h, token: t).mask.reduce(0) { $0 + $1.nonzeroBitCount }
                kept += c
                counts.insert(c)
            }
        }
        #expect(counts.count > 1, "cumulative selection keeps a variable number of channels")
        let m = try cache.memory(layer: 0)
        #expect(m.keyBytes == UInt64((kept + 3 * 64) * precision.bytes))
        #expect(m.keyMetaBytes == UInt64(n * 3 * (8 + 8 + 4) + 3 * (64 * 4 + 4)))
    }

    @Test("n_tokens counts tokens per KV head (as sparkv_layer_tokens), summed over layers")
    func memoryReportCountsTokensPerKVHead() throws {
        // Header: "token counts are per layer and per KV head unless stated otherwise";
        // sparkv_memory.n_tokens: "tokens held, summed over the layers covered (per KV head)".
        let cfg = RefConfig(nQ: 4, nKV: 2, D: 64, r: 0.5, window: 8)
        let cache = try CCache(cfg, layers: 2)
        try cache.prefill(layer: 0, TestData.prompt(config: cfg, n: 100, nWindow: 8, kind: .random, seed: 1))
        try cache.prefill(layer: 1, TestData.prompt(config: cfg, n: 30, nWindow: 8, kind: .random, seed: 2))
        let tok = TestData.appendToken(config: cfg, seed: 3)
        try cache.append(layer: 1, keys: tok.keys, values: tok.values)
        #expect(cache.tokens(layer: 0) == 100)
        #expect(cache.tokens(layer: 1) == 31)
        let n0 = try cache.memory(layer: 0).nTokens
        let n1 = try cache.memory(layer: 1).nTokens
        let nAll = try cache.memory().nTokens
        #expect(n0 == 100, "layer 0 (2 KV heads): n_tokens \(n0), layer tokens 100")
        #expect(n1 == 31, "layer 1 (2 KV heads): n_tokens \(n1), layer tokens 31")
        #expect(nAll == 131, "all layers: n_tokens \(nAll), want 100 + 31")
    }

    @Test("an empty cache reports zero used bytes")
    func emptyCacheReportsZero() throws {
        let cache = try CCache(RefConfig(nQ: 2, nKV: 1, D: 64, r: 0.5), layers: 2)
        for layer in [UInt32(0), 1, SPARKV_ALL_LAYERS] {
            let m = try cache.memory(layer: layer)
            #expect(m.formulaPart == RefMemory())
        }
    }

    @Test("memory grows page by page: reserved never shrinks below used as tokens arrive")
    func reservedCoversTotalWhileAppending() throws {
        let cfg = RefConfig(nQ: 2, nKV: 2, D: 64, r: 0.5, window: 4)
        let cache = try CCache(cfg, capacity: 700)
        var ref = RefLayer(config: cfg, layer: 0, prompt: TestData.prompt(config: cfg, n: 250, nWindow: 4, kind: .random, seed: 2))
        try cache.prefill(layer: 0, TestData.prompt(config: cfg, n: 250, nWindow: 4, kind: .random, seed: 2))
        var lastReserved: UInt64 = 0
        for a in 0..<270 {
            let tok = TestData.appendToken(config: cfg, seed: UInt64(a))
            try cache.append(layer: 0, keys: tok.keys, values: tok.values)
            ref.append(keys: tok.keys, values: tok.values)
            if a % 10 == 9 || a == 5 || a == 6 {
                let m = try cache.memory(layer: 0)
                #expect(m.formulaPart.bytesOnly == ref.memory.bytesOnly, "after \(a + 1) appends: got \(m), want \(ref.memory)")
                #expect(m.reservedBytes >= m.totalBytes)
                #expect(m.reservedBytes >= lastReserved)
                lastReserved = m.reservedBytes
            }
        }
    }
}
