// RecoveryTests.swift — stored kept values and recovered pruned entries against the reference.

import CSparKV
import Testing

struct RecoveryCase: Sendable, CustomStringConvertible {
    var recovery: RefRecovery
    var signs: Bool
    var precision: RefPrecision
    var kind: KeyKind
    var cumulative: Bool
    var D: Int
    var group: Int

    var config: RefConfig {
        RefConfig(nQ: group * 2, nKV: 2, D: D, r: 0.7, cumulative: cumulative, p: 0.8, recovery: recovery,
                  signs: signs, keyPrecision: precision, valuePrecision: precision, window: 16, seed: 0xC0FFEE)
    }
    var description: String { "\(recovery) signs=\(signs) \(precision) \(kind) \(cumulative ? "cumulative" : "topk") D=\(D) G=\(group)" }

    static var all: [RecoveryCase] {
        var out: [RecoveryCase] = []
        var i = 0
        let dims = [64, 40, 128, 8]
        let groups = [1, 3, 4]
        for recovery in RefRecovery.allCases {
            for signs in [false, true] where !(recovery == .none && signs) {
                for precision in RefPrecision.allCases {
                    out.append(RecoveryCase(recovery: recovery, signs: signs, precision: precision,
                                            kind: i % 2 == 0 ? .random : .outlier, cumulative: i % 3 == 2,
                                            D: dims[i % dims.count], group: groups[i % groups.count]))
                    i += 1
                }
            }
        }
        return out
    }
}

/// Check every inspected key of layer 0 against the reference. Kept entries must be bitwise equal;
/// recovered entries within `rel` of the reference (relative to the token's recovered scale).
private func checkKeys(_ pair: CachePair, rel: Float = 2e-6) throws -> (keptChecked: Int, prunedChecked: Int) {
    let ref = pair.refs[0]
    let cfg = ref.config
    var keptChecked = 0, prunedChecked = 0
    var failures: [String] = []
    for h in 0..<cfg.nKV {
        for t in 0..<ref.n {
            let got = try pair.cache.inspectKey(layer: 0, head: h, token: t)
            let mask = ref.mask(head: h, token: t)
            let want = ref.key(head: h, token: t)
            if got.mask != RefMath.packMask(mask) { failures.append("h\(h) t\(t) mask \(got.mask)"); continue }
            // scale of recovered entries in this token: max of e * rq and |want|
            var scale: Float = 0
            if cfg.prunes && t < ref.promptTokens {
                let tok = ref.tokens[h][t]
                for j in 0..<cfg.D where !mask[j] {
                    let rq = RefMath.recoveryRq(qn: ref.qn[h][j], c: ref.c[h])
                    scale = max(scale, Float(max(tok.a, tok.e)) * rq)
                }
            }
            for j in 0..<cfg.D {
                if !got.key[j].isFinite { failures.append("h\(h) t\(t) j\(j) non-finite \(got.key[j])"); continue }
                if mask[j] {
                    keptChecked += 1
                    if got.key[j].bitPattern != want[j].bitPattern {
                        failures.append("h\(h) t\(t) kept j\(j): got \(got.key[j]) want \(want[j])")
                    }
                } else {
                    prunedChecked += 1
                    let tol = rel * max(abs(want[j]), scale) + Float.leastNormalMagnitude
                    if !(abs(got.key[j] - want[j]) <= tol) {
                        failures.append("h\(h) t\(t) pruned j\(j): got \(got.key[j]) want \(want[j]) tol \(tol)")
                    }
                }
            }
        }
    }
    #expect(failures.isEmpty, "\(failures.count) entries differ; first: \(failures.prefix(4))")
    return (keptChecked, prunedChecked)
}

@Suite("Recovery of pruned key entries")
struct RecoveryTests {
    @Test("sparkv_draw_standard is the documented hash and 64-point tables")
    func drawStandardMatchesDocumentedDraw() {
        let inputs: [(UInt64, Int, Int, Int, Int)] = [
            (0, 0, 0, 0, 0), (1, 0, 0, 0, 0), (0, 1, 2, 3, 4), (0xC0FFEE, 5, 7, 1000, 127),
            (UInt64.max, 31, 63, 1 << 40, 255), (42, 0, 3, 255, 64), (0x9E3779B97F4A7C15, 2, 1, 256, 1),
        ]
        var bins = Set<Int>()
        for (seed, layer, head, token, channel) in inputs + (0..<512).map { (7, 1, 2, $0 / 128, $0 % 128) } {
            let bin = RefMath.drawBin(seed: seed, layer: layer, head: head, token: token, channel: channel)
            bins.insert(bin)
            let z = sparkv_draw_standard(seed, UInt32(layer), UInt32(head), UInt64(token), UInt32(channel),
                                         SPARKV_RECOVER_GAUSSIAN)
            let e = sparkv_draw_standard(seed, UInt32(layer), UInt32(head), UInt64(token), UInt32(channel),
                                         SPARKV_RECOVER_EXPONENTIAL)
            #expect(z.bitPattern == RefMath.normalPoints[bin].bitPattern, "normal draw for \((seed, layer, head, token, channel))")
            #expect(e.bitPattern == RefMath.sqrtExponentialPoints[bin].bitPattern, "exponential draw for \((seed, layer, head, token, channel))")
        }
        #expect(bins.count == 64)
        // the tables: mean 0 and 1, variances 0.9961 and 0.9831 (sparkv.h)
        let z = RefMath.normalPoints.map(Double.init), e = RefMath.sqrtExponentialPoints.map { Double($0) * Double($0) }
        #expect(z.reduce(0, +) == 0)
        #expect(abs(e.reduce(0, +) / 64 - 1) < 1e-6)
        #expect(abs(z.map { $0 * $0 }.reduce(0, +) / 64 - 0.99609) < 1e-4)
        #expect(abs(e.map { ($0 - 1) * ($0 - 1) }.reduce(0, +) / 64 - 0.98314) < 1e-4)
        // a known value: mix(0) is splitmix64's first output for seed 0
        #expect(RefMath.mix(0) == 0xE220_A839_7B1D_CDAF)
    }

    @Test("inspect_key returns kept values in key precision and recovered entries per formula",
          arguments: RecoveryCase.all)
    func recoveredKeysFollowFormula(_ tc: RecoveryCase) throws {
        let pair = try CachePair(tc.config, n: 280, nWindow: 20, kind: tc.kind, seed: 77, appends: 3)
        let counts = try checkKeys(pair)
        #expect(counts.prunedChecked > 0)
        #expect(counts.keptChecked > 0)
        // every stored value is the input rounded to value precision
        let ref = pair.refs[0]
        for t in [0, 1, 137, 279, 280, 282] {
            let v = try pair.cache.inspectValue(layer: 0, head: 1, token: t)
            let want = Array(ref.values[1][(t * tc.D)..<((t + 1) * tc.D)])
            #expect(Compare.bitwiseEqual(v, want), "value of token \(t)")
        }
    }

    @Test("sign bits restore the sign of pruned channels; without them recovered entries are >= 0",
          arguments: [RefRecovery.mean, .gaussian, .exponential])
    func signBitsRestoreSignOfPrunedChannels(_ recovery: RefRecovery) throws {
        for signs in [false, true] {
            let cfg = RefConfig(nQ: 2, nKV: 1, D: 64, r: 0.8, recovery: recovery, signs: signs, window: 8, seed: 5)
            let prompt = TestData.prompt(config: cfg, n: 100, nWindow: 8, kind: .random, seed: 8)
            let cache = try CCache(cfg)
            try cache.prefill(layer: 0, prompt)
            var negatives = 0, checked = 0
            for t in 0..<100 {
                let k = try cache.inspectKey(layer: 0, head: 0, token: t)
                for j in 0..<64 where k.mask[j / 8] & (1 << (j % 8)) == 0 && k.key[j] != 0 {
                    checked += 1
                    let original = prompt.keys[t * 64 + j]
                    if signs {
                        #expect((k.key[j] < 0) == (original < 0), "t\(t) j\(j): \(k.key[j]) vs input \(original)")
                    } else {
                        #expect(k.key[j] > 0, "t\(t) j\(j): \(k.key[j])")
                    }
                    if k.key[j] < 0 { negatives += 1 }
                }
            }
            #expect(checked > 1000)
            if signs { #expect(negatives > checked / 4) } else { #expect(negatives == 0) }
        }
    }

    @Test("NONE recovery stores zeros in pruned channels")
    func recoveryNoneZeroesPrunedEntries() throws {
        let cfg = RefConfig(nQ: 3, nKV: 1, D: 40, r: 0.5, recovery: .none, signs: false, window: 8)
        let cache = try CCache(cfg)
        try cache.prefill(layer: 0, TestData.prompt(config: cfg, n: 50, nWindow: 8, kind: .outlier, seed: 2))
        for t in 0..<50 {
            let k = try cache.inspectKey(layer: 0, head: 0, token: t)
            let pruned = (0..<40).filter { k.mask[$0 / 8] & (1 << ($0 % 8)) == 0 }
            #expect(pruned.count == 20)
            #expect(pruned.allSatisfy { k.key[$0] == 0 })
            #expect((0..<40).filter { !pruned.contains($0) }.allSatisfy { k.key[$0] != 0 })
        }
    }

    @Test("GAUSSIAN and EXPONENTIAL draws stay within [0, theta]", arguments: [RefRecovery.gaussian, .exponential])
    func drawsStayWithinTheta(_ recovery: RefRecovery) throws {
        let cfg = RefConfig(nQ: 4, nKV: 2, D: 64, r: 0.8, recovery: recovery, signs: false, window: 16, seed: 99)
        let pair = try CachePair(cfg, n: 200, nWindow: 16, kind: .random, seed: 12)
        let ref = pair.refs[0]
        var clippedHigh = 0
        for h in 0..<2 {
            for t in 0..<200 {
                let tok = ref.tokens[h][t]
                let k = try pair.cache.inspectKey(layer: 0, head: h, token: t)
                for j in 0..<64 where !tok.mask[j] {
                    // |k|^2 * qn_j is the recovered saliency: within [0, theta] up to rounding
                    let s = Double(k.key[j]) * Double(k.key[j]) * Double(ref.qn[h][j])
                    #expect(k.key[j] >= 0)
                    #expect(s <= tok.theta * 1.01 + 1e-12, "t\(t) j\(j): recovered saliency \(s) > theta \(tok.theta)")
                    if s > tok.theta * 0.99 { clippedHigh += 1 }
                }
            }
        }
        if recovery == .exponential { #expect(clippedHigh > 0, "some exponential draws reach theta") }
    }

    static let outlierCases: [(RefRecovery, Int, Bool)] = [
        (.mean, 64, false), (.mean, 128, true), (.gaussian, 64, true), (.gaussian, 128, false),
        (.exponential, 64, false), (.exponential, 128, true),
    ]

    @Test("outlier keys and large window norms give finite, accurate statistics", arguments: outlierCases)
    func outlierStatisticsStayFiniteAndAccurate(_ recovery: RefRecovery, _ D: Int, _ cumulative: Bool) throws {
        // r = 0.97 keeps so few channels that outlier channels (|k| 300..600) get pruned, and the
        // window queries (scale 60) give qn in the hundreds.
        let cfg = RefConfig(nQ: 2, nKV: 2, D: D, r: 0.97, cumulative: cumulative, p: 0.5, minKeep: 1, maxKeep: 2,
                            recovery: recovery, signs: true, window: 32, seed: 17)
        let pair = try CachePair(cfg, n: 300, nWindow: 32, kind: .outlier, seed: 31)
        let ref = pair.refs[0]
        for h in 0..<2 {
            let norms = try pair.cache.inspectQnorm(layer: 0, head: h)
            #expect(norms.c > 100, "window norms are in the hundreds")
        }
        var bigStats = 0
        var worstRel = 0.0
        for h in 0..<2 {
            for t in 0..<300 {
                let tok = ref.tokens[h][t]
                #expect(tok.a.isFinite && tok.e.isFinite && tok.b.isFinite, "reference stats finite")
                if tok.mean > 1e6 { bigStats += 1 }
                let k = try pair.cache.inspectKey(layer: 0, head: h, token: t)
                #expect(k.key.allSatisfy { $0.isFinite }, "h\(h) t\(t) non-finite recovered key")
                for j in 0..<D where !tok.mask[j] {
                    // exact (unquantised) mean magnitude sqrt(m / qn_j)
                    let exact = (tok.mean / Double(ref.qn[h][j])).squareRoot()
                    if recovery == .mean {
                        #expect(k.key[j] != 0)
                        let rel = abs(Double(abs(k.key[j])) - exact) / exact
                        worstRel = max(worstRel, rel)
                    } else {
                        // draws are bounded by the exact theta
                        let bound = (tok.theta / Double(ref.qn[h][j])).squareRoot()
                        #expect(Double(abs(k.key[j])) <= bound * 1.002, "h\(h) t\(t) j\(j)")
                    }
                }
            }
        }
        #expect(worstRel < 1e-3, "MEAN magnitude vs exact sqrt(m/qn): worst relative error \(worstRel)")
        #expect(bigStats > 100, "the outlier channels must reach the pruned statistics (m > 1e6 in \(bigStats) tokens)")
        _ = try checkKeys(pair)
    }
}
