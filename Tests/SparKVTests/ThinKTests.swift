// ThinKTests.swift — ThinK structured key pruning (one channel set per layer and KV head) against
// PolicyRef: the channel set, the stored keys, attention.

import Testing

@testable import SparKV

struct ThinKCase: Sendable, CustomStringConvertible {
    var ratio: Float
    var group: Int
    var D: Int
    var kind: KeyKind
    var keyPrecision: CompressionPolicy.Precision = .f16
    var description: String { "r=\(ratio) G=\(group) D=\(D) \(kind) K=\(keyPrecision)" }
}

@Suite("ThinK")
struct ThinKTests {
    static let cases: [ThinKCase] = [
        ThinKCase(ratio: 0.5, group: 1, D: 32, kind: .random),
        ThinKCase(ratio: 0.25, group: 2, D: 64, kind: .outlier),
        ThinKCase(ratio: 0.875, group: 4, D: 64, kind: .random, keyPrecision: .bf16),
        ThinKCase(ratio: 0.6, group: 3, D: 40, kind: .outlier, keyPrecision: .f32),
    ]

    @Test("ThinK keeps the T channels of largest qn^2 * mean k^2 for every token of a head", arguments: cases)
    func thinkKeepsTheReferenceChannelSet(_ tc: ThinKCase) throws {
        var policy = CompressionPolicy.think(ratio: tc.ratio)
        policy.keyPrecision = tc.keyPrecision
        policy.window = 12
        let n = 70, nKV = 2
        let run = try PolicyRun(policy, nQ: tc.group * nKV, nKV: nKV, D: tc.D, n: n, nWindow: 16, kind: tc.kind,
                                seed: 9, appends: 1)
        let prompt = run.prompts[0]
        let T = run.config.topkKeep
        #expect(policy.keptChannels(headDim: tc.D) == T)
        let norms = RefMath.windowNorms(qWindow: prompt.qWindow, nWindow: prompt.nWindow, config: run.config)
        var keys: [[Float]] = [], values: [[Float]] = []
        for head in 0..<nKV {
            let rows = (0..<n).map { PolicyRef.keyRow(prompt, head: head, token: $0) }
            let channels = PolicyRef.thinkChannels(rows: rows, qn: norms.qn[head], u: 12, keep: T)
            #expect(channels.filter { $0 }.count == T)
            var headKeys: [Float] = []
            for t in 0..<n {
                let want = PolicyRef.thinkKey(rows[t], mask: channels, precision: run.config.keyPrecision)
                headKeys += want
                guard t % 7 == 0 || t == n - 1 else { continue }
                #expect(try run.cache.keptMask(layer: 0, kvHead: head, token: t) == channels, "head \(head) token \(t)")
                #expect(try run.cache.recoveredKey(layer: 0, kvHead: head, token: t) == want, "head \(head) token \(t)")
            }
            // The appended token is dense.
            let appended = run.appended[0][0].keys[(head * tc.D)..<((head + 1) * tc.D)]
            #expect(try run.cache.keptMask(layer: 0, kvHead: head, token: n).allSatisfy { $0 })
            headKeys += appended.map { run.config.keyPrecision.round($0) }
            keys.append(headKeys)
            values.append(run.denseRows(head: head, tokens: Array(0..<n)).values)
        }
        let error = try run.attentionError(keys: keys, values: values, queries: 2,
                                           queryScale: TestData.queryScale(tc.kind))
        #expect(error <= 1e-5, "relative attention error \(error)")
    }

    @Test("ThinK breaks score ties toward the lower channel index")
    func thinkTiesGoToTheLowerChannel() throws {
        // Equal window norms in every channel and keys in {0, ±1, ±2}: many exactly equal scores.
        let config = RefConfig(nQ: 2, nKV: 1, D: 16, window: 4)
        let n = 6
        let prompt = TestData.tiedPrompt(config: config, n: n, nWindow: 4, seed: 12)
        var policy = CompressionPolicy.think(ratio: 0.5)
        policy.window = 4
        let cache = try KVCache(shape: ModelShape(layers: 1, queryHeads: 2, kvHeads: 1, headDim: 16, capacity: n),
                                policy: policy)
        try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.qWindow,
                          tokenCount: n, windowCount: 4)
        let norms = RefMath.windowNorms(qWindow: prompt.qWindow, nWindow: 4, config: config)
        #expect(Set(norms.qn[0]).count == 1, "all channel norms are equal")
        let rows = (0..<n).map { PolicyRef.keyRow(prompt, head: 0, token: $0) }
        let channels = PolicyRef.thinkChannels(rows: rows, qn: norms.qn[0], u: 4, keep: 8)
        // There is a tie at the cut, so the test pins the tie rule.
        var sums = [Double](repeating: 0, count: 16)
        for row in rows { for j in 0..<16 { sums[j] += Double(row[row.startIndex + j] * row[row.startIndex + j]) } }
        let cut = sums.sorted(by: >)[7]
        #expect(sums.filter { $0 >= cut }.count > 8, "channel key energies \(sums)")
        #expect(try cache.keptMask(layer: 0, kvHead: 0, token: 0) == channels)
    }

    @Test("ThinK with eviction scores the surviving tokens only")
    func thinkAfterStreamingUsesSurvivors() throws {
        var policy = CompressionPolicy.think(ratio: 0.75).withEviction(.streamingLLM(sinks: 2, recent: 10))
        policy.window = 8
        let run = try PolicyRun(policy, nQ: 2, nKV: 1, D: 32, n: 60, nWindow: 8, kind: .outlier, seed: 2)
        let prompt = run.prompts[0]
        let survivors = PolicyRef.streamingKeep(n: 60, sinks: 2, recent: 10)
        let norms = RefMath.windowNorms(qWindow: prompt.qWindow, nWindow: 8, config: run.config)
        let channels = PolicyRef.thinkChannels(rows: survivors.map { PolicyRef.keyRow(prompt, head: 0, token: $0) },
                                               qn: norms.qn[0], u: 8, keep: 8)
        let all = PolicyRef.thinkChannels(rows: (0..<60).map { PolicyRef.keyRow(prompt, head: 0, token: $0) },
                                          qn: norms.qn[0], u: 8, keep: 8)
        #expect(try run.storedTokens(head: 0) == survivors)
        #expect(try run.cache.keptMask(layer: 0, kvHead: 0, token: 3) == channels)
        if channels == all { Issue.record("the prompt does not tell survivors-only scoring from whole-prompt scoring") }
    }

    @Test("ThinK rejects cumulative selection, recovery and sign bits")
    func thinkRejectsSparKOptions() {
        let cumulative = thrownSparKVError {
            var p = CompressionPolicy.think(ratio: 0.5)
            p.selection = .cumulative(p: 0.9, minKeep: 1, maxKeep: nil)
            try p.validate(headDim: 64)
        }
        #expect(cumulative?.status == 5 && cumulative?.detail.contains("TOPK") == true)
        let recovery = thrownSparKVError {
            var p = CompressionPolicy.think(ratio: 0.5)
            p.recovery = .mean
            try p.validate(headDim: 64)
        }
        #expect(recovery?.status == 5 && recovery?.detail.contains("recovery") == true)
        let signs = thrownSparKVError {
            var p = CompressionPolicy.think(ratio: 0.5)
            p.signBits = true
            try p.validate(headDim: 64)
        }
        #expect(signs?.status == 5)
    }
}
