// EvictionTests.swift — SnapKV, PyramidKV and StreamingLLM token eviction against PolicyRef.
// Stored tokens are identified by matching each stored value row against the prompt's rows.

import Testing

@testable import SparKV

struct SnapCase: Sendable, CustomStringConvertible {
    var group: Int
    var nKV: Int
    var D: Int
    var n: Int
    var nWindow: Int
    var window: Int
    var budget: Int
    var pool: Int
    var kind: KeyKind = .random
    var scale: Float? = nil
    var description: String {
        "G=\(group) nKV=\(nKV) D=\(D) n=\(n) rows=\(nWindow) w=\(window) budget=\(budget) pool=\(pool) \(kind)"
            + (scale.map { " scale=\($0)" } ?? "")
    }
}

@Suite("Eviction")
struct EvictionTests {
    static let snapCases: [SnapCase] = [
        SnapCase(group: 1, nKV: 1, D: 32, n: 80, nWindow: 16, window: 8, budget: 20, pool: 5),
        SnapCase(group: 2, nKV: 2, D: 64, n: 120, nWindow: 16, window: 16, budget: 30, pool: 1),
        SnapCase(group: 3, nKV: 2, D: 32, n: 100, nWindow: 10, window: 32, budget: 1, pool: 7),
        SnapCase(group: 2, nKV: 1, D: 16, n: 60, nWindow: 8, window: 8, budget: 52, pool: 3),
        SnapCase(group: 2, nKV: 2, D: 32, n: 70, nWindow: 20, window: 6, budget: 10, pool: 9, scale: 0.5),
        SnapCase(group: 2, nKV: 2, D: 64, n: 100, nWindow: 12, window: 12, budget: 25, pool: 5, kind: .outlier,
                 scale: 1e-4),
        SnapCase(group: 4, nKV: 1, D: 64, n: 90, nWindow: 8, window: 8, budget: 20, pool: 5, kind: .outlier),
    ]

    @Test("SnapKV keeps the window and the budget best pooled-attention tokens", arguments: snapCases)
    func snapKVKeepsTheReferenceTokens(_ tc: SnapCase) throws {
        var policy = CompressionPolicy.snapKV(budget: tc.budget, poolKernel: tc.pool)
        policy.window = tc.window
        policy.attentionScale = tc.scale
        let run = try PolicyRun(policy, nQ: tc.group * tc.nKV, nKV: tc.nKV, D: tc.D, n: tc.n, nWindow: tc.nWindow,
                                kind: tc.kind, seed: 31)
        let u = min(tc.window, tc.nWindow)
        #expect(try run.keptCount() == tc.budget + u)
        for head in 0..<tc.nKV {
            let want = PolicyRef.snapKeep(run.prompts[0], head: head, group: tc.group, window: tc.window,
                                          budget: tc.budget, pool: tc.pool, scale: run.scale)
            let got = try run.storedTokens(head: head)
            let extra = Set(got).subtracting(want).sorted(), missing = Set(want).subtracting(got).sorted()
            #expect(got == want, "head \(head): extra \(extra), missing \(missing)")
        }
    }

    /// Layer counts, ratios and mean budgets; none of the budgets is an exact .5 before rounding.
    static let pyramidCases: [(layers: Int, ratio: Float, mean: Int)] = [
        (1, 4, 10), (2, 4, 10), (3, 1, 12), (5, 2.5, 12), (8, 6, 6), (3, 4, 40), (4, 3, 2), (6, 9, 1),
    ]

    @Test("PyramidKV budgets fall linearly over the layers, clamped to the prompt", arguments: pyramidCases)
    func pyramidKVBudgetsPerLayer(_ tc: (layers: Int, ratio: Float, mean: Int)) throws {
        var policy = CompressionPolicy.pyramidKV(meanBudget: tc.mean, ratio: tc.ratio, poolKernel: 3)
        policy.window = 4
        let n = 48, u = 4
        let run = try PolicyRun(policy, nQ: 2, nKV: 1, D: 16, layers: tc.layers, n: n, nWindow: 6, seed: 5)
        var budgets: [Int] = []
        for layer in 0..<tc.layers {
            let budget = PolicyRef.pyramidBudget(mean: tc.mean, ratio: Double(tc.ratio), layer: layer,
                                                 layers: tc.layers, prefix: n - u)
            budgets.append(budget)
            #expect(try run.keptCount(layer: layer) == budget + u, "layer \(layer)")
            #expect(policy.keptPromptTokens(promptTokens: n, windowCount: 6, layer: layer, layers: tc.layers)
                    == budget + u)
            let want = PolicyRef.snapKeep(run.prompts[layer], head: 0, group: 2, window: 4, budget: budget, pool: 3,
                                          scale: run.scale)
            #expect(try run.storedTokens(layer: layer, head: 0) == want, "layer \(layer)")
        }
        #expect(budgets == budgets.sorted(by: >), "budgets do not increase with depth: \(budgets)")
    }

    @Test("StreamingLLM keeps the first sinks and the last recent tokens", arguments: [
        (4, 20, 60), (0, 10, 30), (5, 0, 30), (10, 30, 40), (1, 39, 40), (3, 3, 5), (0, 1, 1),
    ])
    func streamingKeepsSinksAndRecent(_ sinks: Int, _ recent: Int, _ n: Int) throws {
        let run = try PolicyRun(.streamingLLM(sinks: sinks, recent: recent), nQ: 3, nKV: 1, D: 16, n: n, nWindow: 0,
                                seed: 17, appends: 1)
        let want = PolicyRef.streamingKeep(n: n, sinks: sinks, recent: recent)
        #expect(try run.storedTokens(head: 0) == want)
        #expect(run.policy.keptPromptTokens(promptTokens: n, windowCount: 0, layer: 0, layers: 1) == want.count)
        // The appended token follows the survivors.
        #expect(try run.cache.value(layer: 0, kvHead: 0, token: want.count)
                == run.appended[0][0].values.map { Float(Float16($0)) })
    }

    static let attentionPolicies: [CompressionPolicy] = [
        CompressionPolicy(eviction: .snapKV(budget: 24, poolKernel: 5), keyPrecision: .f32, valuePrecision: .f32),
        CompressionPolicy(eviction: .pyramidKV(meanBudget: 20, ratio: 3, poolKernel: 1), keyPrecision: .f32,
                          valuePrecision: .f32, window: 10),
        CompressionPolicy(eviction: .streamingLLM(sinks: 4, recent: 25), keyPrecision: .f32, valuePrecision: .f32),
        CompressionPolicy.snapKV(budget: 30),   // f16: the reference rounds the same way
    ]

    @Test("attention over an evicted cache is dense attention over the kept tokens", arguments: attentionPolicies)
    func evictedAttentionIsDenseAttentionOverSurvivors(_ policy: CompressionPolicy) throws {
        let layers = 2
        let run = try PolicyRun(policy, nQ: 6, nKV: 2, D: 32, layers: layers, n: 90, nWindow: 16, kind: .random,
                                seed: 3, appends: 2)
        for layer in 0..<layers {
            var keys: [[Float]] = [], values: [[Float]] = []
            for head in 0..<2 {
                let stored = try run.storedTokens(layer: layer, head: head)
                #expect(stored.count < 90)
                let rows = run.denseRows(layer: layer, head: head, tokens: stored)
                keys.append(rows.keys)
                values.append(rows.values)
                // Dense keys: stored exactly (in the key precision), all channels kept.
                for (index, t) in stored.enumerated().prefix(5) {
                    #expect(try run.cache.recoveredKey(layer: layer, kvHead: head, token: index)
                            == Array(rows.keys[(index * 32)..<((index + 1) * 32)]), "token \(t)")
                }
            }
            let error = try run.attentionError(layer: layer, keys: keys, values: values, queries: 3)
            #expect(error <= 1e-5, "layer \(layer): relative error \(error)")
        }
    }
}
