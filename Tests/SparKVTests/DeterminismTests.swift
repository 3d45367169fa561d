// DeterminismTests.swift — same inputs give bit-identical outputs, whatever the run or thread count.

import CSparKV
import Testing

/// Build a 2-layer cache with `cfg`, prefill + append, and return the attend outputs of a few
/// queries on every layer (and the kernel-independent stored keys of a few tokens).
private func runOnce(_ cfg: RefConfig, kernel: sparkv_kernel? = nil, kind: KeyKind = .random) throws -> [[Float]] {
    let cache = try CCache(cfg, layers: 2, capacity: 700)
    if let kernel { try cache.setKernel(kernel) }
    var outputs: [[Float]] = []
    for layer in 0..<2 {
        let prompt = TestData.prompt(config: cfg, n: 530 - 40 * layer, nWindow: 24, kind: kind, seed: UInt64(layer) + 10)
        try cache.prefill(layer: layer, prompt)
        for a in 0..<3 {
            let t = TestData.appendToken(config: cfg, seed: UInt64(a + 7 * layer), kind: kind)
            try cache.append(layer: layer, keys: t.keys, values: t.values)
        }
        for qi in 0..<3 {
            outputs.append(try cache.attend(layer: layer, TestData.query(config: cfg, seed: UInt64(qi), scale: TestData.queryScale(kind))))
        }
        for t in [0, 255, 256, 489, 490, 492] where t < cache.tokens(layer: layer) {
            outputs.append(try cache.inspectKey(layer: layer, head: 1, token: t).key)
        }
    }
    return outputs
}

private func expectBitIdentical(_ a: [[Float]], _ b: [[Float]], _ what: String,
                                sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == b.count, sourceLocation: sourceLocation)
    for (i, (x, y)) in zip(a, b).enumerated() {
        #expect(Compare.bitwiseEqual(x, y), "\(what): output \(i) differs, max |diff| \(Compare.maxAbsDiff(x, y))",
                sourceLocation: sourceLocation)
    }
}

struct DeterminismCase: Sendable, CustomStringConvertible {
    var recovery: RefRecovery
    var cumulative: Bool
    var D: Int
    var group: Int
    var kind: KeyKind
    var config: RefConfig {
        RefConfig(nQ: group * 2, nKV: 2, D: D, r: 0.7, cumulative: cumulative, p: 0.9, recovery: recovery,
                  signs: recovery != .none, window: 16, seed: 2024)
    }
    var description: String { "\(recovery) \(cumulative ? "cumulative" : "topk") D=\(D) G=\(group) \(kind)" }
}

@Suite("Determinism")
struct DeterminismTests {
    static let cases: [DeterminismCase] = [
        DeterminismCase(recovery: .gaussian, cumulative: false, D: 64, group: 4, kind: .random),
        DeterminismCase(recovery: .exponential, cumulative: true, D: 128, group: 1, kind: .outlier),
        DeterminismCase(recovery: .mean, cumulative: false, D: 40, group: 3, kind: .outlier),
        DeterminismCase(recovery: .none, cumulative: true, D: 64, group: 1, kind: .random),
    ]

    @Test("two runs with the same seed give bit-identical outputs", arguments: cases)
    func sameSeedGivesBitIdenticalOutputs(_ tc: DeterminismCase) throws {
        var cfg = tc.config
        cfg.threads = 2
        let a = try runOnce(cfg, kind: tc.kind)
        let b = try runOnce(cfg, kind: tc.kind)
        expectBitIdentical(a, b, "run 1 vs run 2")
    }

    @Test("threads = 1 and threads = 2 give bit-identical outputs on every kernel", arguments: cases)
    func threadCountDoesNotChangeOutputs(_ tc: DeterminismCase) throws {
        for kernel in supportedKernelList() {
            var cfg = tc.config
            cfg.threads = 1
            let one = try runOnce(cfg, kernel: kernel, kind: tc.kind)
            cfg.threads = 2
            let two = try runOnce(cfg, kernel: kernel, kind: tc.kind)
            expectBitIdentical(one, two, "\(String(cString: sparkv_kernel_name(kernel))) 1 vs 2 threads")
            cfg.threads = 0
            let dflt = try runOnce(cfg, kernel: kernel, kind: tc.kind)
            expectBitIdentical(one, dflt, "\(String(cString: sparkv_kernel_name(kernel))) 1 vs default threads")
        }
    }

    @Test("repeated attend on the same cache is bit-identical")
    func attendIsRepeatable() throws {
        let cfg = RefConfig(nQ: 4, nKV: 2, D: 128, r: 0.8, recovery: .gaussian, window: 16, seed: 5, threads: 2)
        let pair = try CachePair(cfg, n: 300, nWindow: 16, kind: .random, seed: 1, appends: 2)
        let q = TestData.query(config: cfg, seed: 3)
        let first = try pair.cache.attend(layer: 0, q)
        for _ in 0..<3 {
            let again = try pair.cache.attend(layer: 0, q)
            #expect(Compare.bitwiseEqual(first, again), "max |diff| \(Compare.maxAbsDiff(first, again))")
        }
    }

    @Test("the seed changes GAUSSIAN/EXPONENTIAL draws but not MEAN", arguments: [RefRecovery.gaussian, .exponential, .mean])
    func seedSelectsTheDraws(_ recovery: RefRecovery) throws {
        var cfg = RefConfig(nQ: 2, nKV: 2, D: 64, r: 0.7, recovery: recovery, window: 16, seed: 1)
        let a = try runOnce(cfg)
        cfg.seed = 2
        let b = try runOnce(cfg)
        let differs = zip(a, b).contains { !Compare.bitwiseEqual($0, $1) }
        #expect(differs == (recovery != .mean), "seed 1 vs 2 for \(recovery)")
    }
}
