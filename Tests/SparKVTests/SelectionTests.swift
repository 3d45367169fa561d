// SelectionTests.swift — window query norms and per-token channel selection against the reference.

import CSparKV
import Testing

// MARK: - Window query norms

struct NormCase: Sendable, CustomStringConvertible {
    var group: Int
    var nKV: Int
    var D: Int
    var window: Int
    var nWindow: Int
    var n: Int
    var kind: KeyKind
    var description: String { "G=\(group) nKV=\(nKV) D=\(D) window=\(window) nWindow=\(nWindow) \(kind)" }
}

@Suite("Window query norms")
struct WindowNormTests {
    static let cases: [NormCase] = [
        NormCase(group: 1, nKV: 2, D: 64, window: 32, nWindow: 48, n: 300, kind: .random),   // window < n_window
        NormCase(group: 1, nKV: 1, D: 8, window: 5, nWindow: 40, n: 40, kind: .outlier),
        NormCase(group: 3, nKV: 2, D: 40, window: 16, nWindow: 16, n: 100, kind: .outlier),
        NormCase(group: 3, nKV: 1, D: 128, window: 32, nWindow: 70, n: 270, kind: .random),
        NormCase(group: 4, nKV: 2, D: 128, window: 32, nWindow: 8, n: 260, kind: .outlier),   // window > n_window
        NormCase(group: 4, nKV: 3, D: 64, window: 7, nWindow: 31, n: 31, kind: .random),
    ]

    @Test("inspect_qnorm equals the reference qn and c bitwise", arguments: cases)
    func windowNormsMatchReferenceBitwise(_ tc: NormCase) throws {
        let cfg = RefConfig(nQ: tc.group * tc.nKV, nKV: tc.nKV, D: tc.D, r: 0.5, window: tc.window)
        let prompt = TestData.prompt(config: cfg, n: tc.n, nWindow: tc.nWindow, kind: tc.kind, seed: 11)
        let cache = try CCache(cfg)
        try cache.prefill(layer: 0, prompt)
        let ref = RefMath.windowNorms(qWindow: prompt.qWindow, nWindow: prompt.nWindow, config: cfg)
        for h in 0..<tc.nKV {
            let got = try cache.inspectQnorm(layer: 0, head: h)
            let bad = (0..<tc.D).filter { got.qn[$0].bitPattern != ref.qn[h][$0].bitPattern }
            #expect(bad.isEmpty, "head \(h): qn differs at channels \(bad.prefix(5)) e.g. got \(bad.first.map { got.qn[$0] } ?? 0) want \(bad.first.map { ref.qn[h][$0] } ?? 0)")
            #expect(got.c.bitPattern == ref.c[h].bitPattern, "head \(h): c got \(got.c) want \(ref.c[h])")
        }
    }

    @Test("window rows older than policy.window do not affect the norms")
    func windowUsesOnlyLastRows() throws {
        let cfg = RefConfig(nQ: 4, nKV: 2, D: 64, r: 0.5, window: 8)
        var a = TestData.prompt(config: cfg, n: 64, nWindow: 20, kind: .random, seed: 3)
        var b = a
        // change the 12 oldest rows of every query head in b only
        for qh in 0..<cfg.nQ { for w in 0..<12 { for j in 0..<cfg.D { b.qWindow[(qh * 20 + w) * cfg.D + j] += 5 } } }
        let ca = try CCache(cfg), cb = try CCache(cfg)
        try ca.prefill(layer: 0, a)
        try cb.prefill(layer: 0, b)
        for h in 0..<cfg.nKV {
            let na = try ca.inspectQnorm(layer: 0, head: h), nb = try cb.inspectQnorm(layer: 0, head: h)
            #expect(Compare.bitwiseEqual(na.qn, nb.qn))
            #expect(na.c == nb.c)
        }
        // ...and the newest rows do.
        for qh in 0..<cfg.nQ { for j in 0..<cfg.D { a.qWindow[(qh * 20 + 19) * cfg.D + j] += 5 } }
        let cc = try CCache(cfg)
        try cc.prefill(layer: 0, a)
        let nc = try cc.inspectQnorm(layer: 0, head: 0), nb = try cb.inspectQnorm(layer: 0, head: 0)
        #expect(!Compare.bitwiseEqual(nc.qn, nb.qn))
    }

    @Test("a dense or empty layer reports zero norms and c = 1", arguments: [Float(0), 0.1])
    func denseLayerReportsZeroNormsAndUnitScale(r: Float) throws {
        // r = 0.1 with D = 8: T = 8 - floor(0.8) = 8, so nothing is pruned and keys stay dense.
        let cfg = RefConfig(nQ: 2, nKV: 1, D: 8, r: r)
        #expect(!cfg.prunes)
        let cache = try CCache(cfg, layers: 2)
        let prompt = TestData.prompt(config: cfg, n: 20, nWindow: 4, kind: .random, seed: 5)
        try cache.prefill(layer: 0, prompt)
        for layer in 0..<2 { // layer 1 never prefilled
            let got = try cache.inspectQnorm(layer: layer, head: 0)
            #expect(got.qn.allSatisfy { $0 == 0 })
            #expect(got.c == 1)
        }
        let mem = try cache.memory(layer: 0)
        #expect(mem.keyMetaBytes == 0)
        for t in 0..<20 {
            let k = try cache.inspectKey(layer: 0, head: 0, token: t)
            #expect(k.mask == [0xFF])
            #expect(Compare.bitwiseEqual(k.key, prompt.keys[(t * 8)..<(t * 8 + 8)].map { RefPrecision.f16.round($0) }))
        }
    }

    @Test("all-zero window queries give c = 1, index-order selection and zero recovery")
    func zeroWindowQueriesGiveUnitScaleAndIndexOrderSelection() throws {
        let cfg = RefConfig(nQ: 1, nKV: 1, D: 16, r: 0.5, recovery: .mean)
        var prompt = TestData.prompt(config: cfg, n: 10, nWindow: 4, kind: .random, seed: 9)
        prompt.qWindow = [Float](repeating: 0, count: prompt.qWindow.count)
        let cache = try CCache(cfg)
        try cache.prefill(layer: 0, prompt)
        let norms = try cache.inspectQnorm(layer: 0, head: 0)
        #expect(norms.qn.allSatisfy { $0 == 0 })
        #expect(norms.c == 1)
        for t in 0..<10 {
            let k = try cache.inspectKey(layer: 0, head: 0, token: t)
            #expect(k.mask == [0xFF, 0x00], "token \(t): all saliencies are 0, ties keep the 8 lowest channels")
            #expect(k.key[8...].allSatisfy { $0 == 0 }, "qn = 0 recovers 0")
        }
    }
}

// MARK: - Channel selection

struct SelectCase: Sendable, CustomStringConvertible {
    var D: Int
    var group: Int
    var nKV: Int
    var r: Float = 0
    var cumulative = false
    var p: Float = 0.9
    var minKeep = 1
    var maxKeep = 0
    var kind: KeyKind = .random
    var tied = false
    var n = 300

    var config: RefConfig {
        RefConfig(nQ: group * nKV, nKV: nKV, D: D, r: r, cumulative: cumulative, p: p, minKeep: minKeep,
                  maxKeep: maxKeep, recovery: .mean, window: 16)
    }
    var description: String { "\(config) \(tied ? "tied" : kind.description) n=\(n)" }
}

/// Compare every stored token's mask to the reference; returns the number of mismatching tokens.
private func checkMasks(_ tc: SelectCase, seed: UInt64) throws {
    let cfg = tc.config
    let pair = try CachePair(cfg, n: tc.n, nWindow: 24, kind: tc.kind, seed: seed, tied: tc.tied)
    let ref = pair.refs[0]
    var mismatches: [String] = []
    for h in 0..<cfg.nKV {
        for t in 0..<tc.n {
            let want = RefMath.packMask(ref.mask(head: h, token: t))
            let got = try pair.cache.inspectKey(layer: 0, head: h, token: t).mask
            if got != want { mismatches.append("h\(h) t\(t): got \(got) want \(want)") }
        }
    }
    #expect(mismatches.isEmpty, "\(mismatches.count) tokens differ; first: \(mismatches.prefix(3))")
}

@Suite("Channel selection")
struct SelectionTests {
    static let topkCases: [SelectCase] = [
        SelectCase(D: 64, group: 1, nKV: 2, r: 0.5),
        SelectCase(D: 40, group: 3, nKV: 1, r: 0.7),
        SelectCase(D: 128, group: 4, nKV: 1, r: 0.8),
        SelectCase(D: 64, group: 1, nKV: 1, r: 0.5, kind: .outlier),
        SelectCase(D: 128, group: 3, nKV: 2, r: 0.7, kind: .outlier, n: 520),
        SelectCase(D: 8, group: 4, nKV: 1, r: 0.8, kind: .outlier),
        SelectCase(D: 64, group: 1, nKV: 1, r: 0.7, tied: true),
        SelectCase(D: 40, group: 3, nKV: 1, r: 0.5, tied: true),
    ]

    @Test("TOPK keeps the T highest saliencies of each token, ties toward lower channels", arguments: topkCases)
    func topkKeepsHighestSaliencyPerToken(_ tc: SelectCase) throws {
        try checkMasks(tc, seed: 21)
        // every token keeps exactly T channels
        let cfg = tc.config
        let cache = try CCache(cfg)
        try cache.prefill(layer: 0, TestData.prompt(config: cfg, n: 30, nWindow: 8, kind: tc.kind, seed: 2))
        for t in 0..<30 {
            let kept = try cache.inspectKey(layer: 0, head: 0, token: t).mask.reduce(0) { $0 + $1.nonzeroBitCount }
            #expect(kept == cfg.topkKeep)
        }
        #expect(Int(sparkv_topk_keep(cfg.r, UInt32(cfg.D))) == cfg.topkKeep)
    }

    static let cumulativeCases: [SelectCase] = [
        SelectCase(D: 64, group: 1, nKV: 2, cumulative: true, p: 0.5),
        SelectCase(D: 64, group: 3, nKV: 1, cumulative: true, p: 0.9),
        SelectCase(D: 128, group: 4, nKV: 1, cumulative: true, p: 1.0),
        SelectCase(D: 40, group: 1, nKV: 1, cumulative: true, p: 0.8, kind: .outlier),
        SelectCase(D: 128, group: 4, nKV: 2, cumulative: true, p: 0.99, kind: .outlier, n: 520),
        SelectCase(D: 64, group: 1, nKV: 1, cumulative: true, p: 0.95, minKeep: 40),        // min clamp
        SelectCase(D: 64, group: 1, nKV: 1, cumulative: true, p: 0.95, minKeep: 2, maxKeep: 6), // max clamp
        SelectCase(D: 128, group: 3, nKV: 1, cumulative: true, p: 0.5, minKeep: 0, maxKeep: 3, kind: .outlier),
        SelectCase(D: 64, group: 1, nKV: 1, cumulative: true, p: 0.7, minKeep: 0, tied: true),
        SelectCase(D: 40, group: 3, nKV: 1, cumulative: true, p: 0.6, minKeep: 1, tied: true),
        SelectCase(D: 8, group: 1, nKV: 1, cumulative: true, p: 0.3, minKeep: 8, maxKeep: 8),
    ]

    @Test("CUMULATIVE keeps the shortest top prefix reaching p * total, clamped", arguments: cumulativeCases)
    func cumulativeKeepsSmallestPrefixReachingTarget(_ tc: SelectCase) throws {
        try checkMasks(tc, seed: 33)
    }

    @Test("cumulative clamps bound every token's kept count")
    func cumulativeClampsBoundKeptCount() throws {
        var tc = SelectCase(D: 64, group: 1, nKV: 1, cumulative: true, p: 0.99, minKeep: 3, maxKeep: 5, n: 50)
        var cache = try CCache(tc.config)
        try cache.prefill(layer: 0, TestData.prompt(config: tc.config, n: 50, nWindow: 8, kind: .random, seed: 4))
        for t in 0..<50 {
            let kept = try cache.inspectKey(layer: 0, head: 0, token: t).mask.reduce(0) { $0 + $1.nonzeroBitCount }
            #expect(kept == 5, "p = 0.99 on random keys needs far more than 5 channels; max_keep = 5 clamps")
        }
        tc.p = 0.01
        tc.minKeep = 9
        tc.maxKeep = 0
        cache = try CCache(tc.config)
        try cache.prefill(layer: 0, TestData.prompt(config: tc.config, n: 50, nWindow: 8, kind: .random, seed: 4))
        for t in 0..<50 {
            let kept = try cache.inspectKey(layer: 0, head: 0, token: t).mask.reduce(0) { $0 + $1.nonzeroBitCount }
            #expect(kept == 9, "p = 0.01 needs 1 channel; min_keep = 9 clamps")
        }
    }

    @Test("all-zero keys keep the lowest channels (TOPK) or min_keep channels (CUMULATIVE)")
    func allZeroKeysKeepLowestChannels() throws {
        for cumulative in [false, true] {
            let cfg = RefConfig(nQ: 1, nKV: 1, D: 16, r: 0.75, cumulative: cumulative, p: 0.9, minKeep: 2)
            var prompt = TestData.prompt(config: cfg, n: 4, nWindow: 4, kind: .random, seed: 1)
            prompt.keys = [Float](repeating: 0, count: prompt.keys.count)
            let cache = try CCache(cfg)
            try cache.prefill(layer: 0, prompt)
            for t in 0..<4 {
                let k = try cache.inspectKey(layer: 0, head: 0, token: t)
                // TOPK keeps 16 - 12 = 4 channels 0..3; CUMULATIVE: target 0 is met by 0 channels, min_keep = 2
                #expect(k.mask == (cumulative ? [0x03, 0x00] : [0x0F, 0x00]), "cumulative=\(cumulative) token \(t)")
                #expect(k.key.allSatisfy { $0 == 0 })
            }
        }
    }

    @Test("sparkv_topk_keep is D - floor((double)r * D)",
          arguments: [Float(0), 0.1, 0.25, 0.3, 0.5, 0.7, 0.8, 0.9, 0.99, 0.999])
    func topkKeepMatchesFormula(r: Float) {
        for D in stride(from: 8, through: 256, by: 8) {
            let want = D - Int((Double(r) * Double(D)).rounded(.down))
            #expect(Int(sparkv_topk_keep(r, UInt32(D))) == want, "r=\(r) D=\(D)")
        }
    }
}
