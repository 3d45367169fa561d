// AttentionTests.swift — decode attention against the double-precision reference, and SIMD
// kernels against the portable kernel.

import CSparKV
import Testing

/// Attend `queries` decode queries on layer `layer` and compare with the reference.
/// Tolerance: `rel` times the largest |reference output| of the query (the output scale).
private func checkAttention(_ pair: CachePair, layer: Int = 0, queries: Int, querySeed: UInt64, queryScale: Float,
                            rel: Double = 1e-5) throws {
    let ref = pair.refs[layer]
    for i in 0..<queries {
        let q = TestData.query(config: ref.config, seed: querySeed &+ UInt64(i), scale: queryScale)
        let got = try pair.cache.attend(layer: layer, q)
        let want = ref.attend(q)
        let scale = max(Compare.maxAbs(want), 1e-3)
        let diff = Compare.maxAbsDiff(got, want)
        #expect(diff <= rel * scale,
                "\(ref.config) query \(i): max |diff| \(diff) vs output scale \(scale) (rel \(diff / scale))")
    }
}

struct DenseCase: Sendable, CustomStringConvertible {
    var precision: RefPrecision
    var kind: KeyKind
    var D: Int
    var group: Int
    var nKV: Int
    var description: String { "\(precision) \(kind) D=\(D) G=\(group) nKV=\(nKV)" }
}

struct PrunedCase: Sendable, CustomStringConvertible {
    var D: Int
    var group: Int
    var recovery: RefRecovery
    var signs: Bool
    var cumulative: Bool
    var kind: KeyKind
    var r: Float
    var n: Int
    var description: String {
        "D=\(D) G=\(group) \(recovery) signs=\(signs) \(cumulative ? "cumulative" : "topk r=\(r)") \(kind) n=\(n)"
    }
}

@Suite("Decode attention")
struct AttentionTests {
    static let denseCases: [DenseCase] = [
        DenseCase(precision: .f16, kind: .random, D: 64, group: 1, nKV: 2),
        DenseCase(precision: .f32, kind: .random, D: 128, group: 4, nKV: 2),
        DenseCase(precision: .f16, kind: .outlier, D: 40, group: 3, nKV: 1),
        DenseCase(precision: .f32, kind: .outlier, D: 64, group: 3, nKV: 2),
        DenseCase(precision: .bf16, kind: .random, D: 8, group: 4, nKV: 1),
        DenseCase(precision: .f16, kind: .random, D: 128, group: 1, nKV: 1),
    ]

    @Test("r = 0 attention equals dense attention over rounded K/V", arguments: denseCases)
    func denseAttentionMatchesReference(_ tc: DenseCase) throws {
        let cfg = RefConfig(nQ: tc.group * tc.nKV, nKV: tc.nKV, D: tc.D, r: 0,
                            keyPrecision: tc.precision, valuePrecision: tc.precision)
        #expect(!cfg.prunes)
        let pair = try CachePair(cfg, layers: 2, n: 530, nWindow: 0, kind: tc.kind, seed: 1, appends: 4)
        for layer in 0..<2 {
            try checkAttention(pair, layer: layer, queries: 2, querySeed: 40 &+ UInt64(layer),
                               queryScale: TestData.queryScale(tc.kind))
        }
        // stored keys are the inputs rounded to key precision, mask all ones
        let k = try pair.cache.inspectKey(layer: 0, head: 0, token: 300)
        #expect(k.mask.allSatisfy { $0 == 0xFF })
        #expect(Compare.bitwiseEqual(k.key, pair.refs[0].key(head: 0, token: 300)))
    }

    static let prunedCases: [PrunedCase] = {
        var out: [PrunedCase] = []
        let dims = [64, 128, 40]
        let groups = [1, 3, 4]
        var i = 0
        for recovery in RefRecovery.allCases {
            for D in dims {
                out.append(PrunedCase(D: D, group: groups[(i + D) % 3], recovery: recovery,
                                      signs: recovery != .none && i % 2 == 0, cumulative: i % 4 == 3,
                                      kind: i % 3 == 1 ? .outlier : .random, r: [0.5, 0.7, 0.8][i % 3],
                                      n: [300, 520, 260][i % 3]))
                i += 1
            }
        }
        return out
    }()

    @Test("pruned attention equals reference attention over reconstructed keys", arguments: prunedCases)
    func prunedAttentionMatchesReference(_ tc: PrunedCase) throws {
        let cfg = RefConfig(nQ: tc.group * 2, nKV: 2, D: tc.D, r: tc.r, cumulative: tc.cumulative, p: 0.8,
                            recovery: tc.recovery, signs: tc.signs, window: 24, seed: 1234)
        let pair = try CachePair(cfg, n: tc.n, nWindow: 30, kind: tc.kind, seed: 5, appends: 5)
        #expect(pair.cache.tokens(layer: 0) == tc.n + 5)
        try checkAttention(pair, queries: 2, querySeed: 900, queryScale: TestData.queryScale(tc.kind))
    }

    @Test("a custom attention_scale replaces 1/sqrt(D)", arguments: [Float(0.05), 0.3])
    func customAttentionScaleIsApplied(scale: Float) throws {
        var cfg = RefConfig(nQ: 6, nKV: 2, D: 64, r: 0.5, recovery: .gaussian, window: 16, seed: 3,
                            attentionScale: scale)
        let pair = try CachePair(cfg, n: 300, nWindow: 16, kind: .random, seed: 8, appends: 3)
        try checkAttention(pair, queries: 2, querySeed: 1, queryScale: 1)
        // the same cache with the default scale gives a different output
        cfg.attentionScale = 0
        let dflt = try CachePair(cfg, n: 300, nWindow: 16, kind: .random, seed: 8, appends: 3)
        let q = TestData.query(config: cfg, seed: 1)
        let a = try pair.cache.attend(layer: 0, q), b = try dflt.cache.attend(layer: 0, q)
        #expect(Compare.maxAbsDiff(a, b) > 1e-3)
    }

    @Test("attend over prompt and appends of two layers keeps layers independent")
    func layersAttendOverTheirOwnTokens() throws {
        let cfg = RefConfig(nQ: 4, nKV: 1, D: 64, r: 0.8, recovery: .mean, window: 16)
        let pair = try CachePair(cfg, layers: 3, n: 257, nWindow: 16, kind: .outlier, seed: 3, appends: 2)
        for layer in 0..<3 {
            #expect(pair.cache.tokens(layer: layer) == 259)
            try checkAttention(pair, layer: layer, queries: 1, querySeed: 5, queryScale: 0.01)
        }
    }

    @Test("a 1-token prompt followed by appends attends correctly")
    func singleTokenPromptThenAppends() throws {
        let cfg = RefConfig(nQ: 3, nKV: 1, D: 40, r: 0.5, recovery: .exponential, window: 4, seed: 1)
        let pair = try CachePair(cfg, n: 1, nWindow: 1, kind: .random, seed: 2, appends: 6)
        try checkAttention(pair, queries: 2, querySeed: 7, queryScale: 1)
    }
}

// MARK: - SIMD kernels

struct KernelCase: Sendable, CustomStringConvertible {
    var D: Int
    var precision: RefPrecision
    var description: String { "D=\(D) \(precision)" }
}

@Suite("SIMD kernels")
struct KernelTests {
    @Test("the portable kernel is always supported and AUTO resolves to a supported kernel")
    func portableKernelIsAlwaysSupported() throws {
        #expect(sparkv_kernel_supported(SPARKV_KERNEL_PORTABLE) == 1)
        let cache = try CCache(RefConfig(nQ: 1, nKV: 1, D: 64))
        let k = sparkv_cache_kernel(cache.handle)
        #expect(k != SPARKV_KERNEL_AUTO)
        #expect(sparkv_kernel_supported(k) == 1)
        for kernel in supportedKernelList() {
            try cache.setKernel(kernel)
            #expect(sparkv_cache_kernel(cache.handle) == kernel)
        }
        #expect(String(cString: sparkv_kernel_name(SPARKV_KERNEL_PORTABLE)) == "portable")
        #expect(String(cString: sparkv_kernel_name(SPARKV_KERNEL_AVX2)) == "avx2")
        #expect(String(cString: sparkv_kernel_name(SPARKV_KERNEL_AVX512)) == "avx512")
        #expect(String(cString: sparkv_kernel_name(SPARKV_KERNEL_AUTO)) == "auto")
    }

    static let cases: [KernelCase] = [8, 40, 64, 128, 256].flatMap { D in
        RefPrecision.allCases.map { KernelCase(D: D, precision: $0) }
    }

    @Test("every supported kernel's attend output equals the portable kernel's", arguments: cases)
    func simdKernelsMatchPortable(_ tc: KernelCase) throws {
        let kernels = supportedKernelList()
        try #require(kernels.first == SPARKV_KERNEL_PORTABLE)
        // (recovery, signs, cumulative)
        let variants: [(RefRecovery, Bool, Bool)] = [
            (.none, false, false), (.mean, true, false), (.mean, false, false), (.gaussian, true, false),
            (.none, false, true), (.mean, true, true), (.mean, false, true), (.gaussian, false, true),
            (.exponential, true, false),
        ]
        var compared = 0
        for (vi, (recovery, signs, cumulative)) in variants.enumerated() {
            for dense in [false, true] where !(dense && vi > 0) {
                let cfg = RefConfig(nQ: 4, nKV: 2, D: tc.D, r: dense ? 0 : 0.5 + 0.1 * Float(vi % 4),
                                    cumulative: dense ? false : cumulative, p: 0.85, recovery: recovery, signs: signs,
                                    keyPrecision: tc.precision, valuePrecision: tc.precision, window: 16,
                                    seed: 77, threads: 2)
                let kind: KeyKind = vi % 2 == 0 ? .random : .outlier
                let cache = try CCache(cfg, capacity: 600)
                let prompt = TestData.prompt(config: cfg, n: 270 + vi, nWindow: 16, kind: kind, seed: UInt64(vi))
                try cache.prefill(layer: 0, prompt)
                for a in 0..<4 {
                    let tok = TestData.appendToken(config: cfg, seed: UInt64(a * 31 + vi), kind: kind)
                    try cache.append(layer: 0, keys: tok.keys, values: tok.values)
                }
                for qi in 0..<2 {
                    let q = TestData.query(config: cfg, seed: UInt64(qi), scale: TestData.queryScale(kind))
                    try cache.setKernel(SPARKV_KERNEL_PORTABLE)
                    let base = try cache.attend(layer: 0, q)
                    let scale = max(Compare.maxAbs(base), 1e-3)
                    for kernel in kernels.dropFirst() {
                        try cache.setKernel(kernel)
                        let got = try cache.attend(layer: 0, q)
                        let diff = Compare.maxAbsDiff(got, base)
                        #expect(diff <= 1e-5 * scale,
                                "\(String(cString: sparkv_kernel_name(kernel))) vs portable, \(cfg) dense=\(dense) \(kind) query \(qi): max |diff| \(diff), scale \(scale)")
                        compared += 1
                    }
                }
            }
        }
        // Kernels the CPU lacks are skipped (only PORTABLE: nothing to compare).
        #expect(compared == (kernels.count - 1) * 2 * (variants.count + 1))
    }
}
