// PolicyPipelineTests.swift — CompressionPolicy as a pipeline (eviction, then key pruning, then
// value pruning) through the Swift API: composition order, the memory report of every policy,
// JSON and compact-string round trips, validation delegated to the C library. Also the harness the
// Eviction / ThinK / ValuePruning suites share.

import CSparKV
import Foundation
import Testing

@testable import SparKV

// MARK: - Harness shared by the policy suites

extension RefPrecision {
    init(_ p: CompressionPolicy.Precision) { self = RefPrecision(rawValue: p.rawValue)! }
}

/// A KVCache with `policy`, its layers prefilled with TestData prompts (one per layer), and
/// `appends` dense tokens appended to every layer.
struct PolicyRun {
    let policy: CompressionPolicy
    /// The reference's view of the shape and precisions (SparK fields too, for RefMath).
    let config: RefConfig
    let shape: ModelShape
    let cache: KVCache
    let prompts: [TestPrompt]
    /// appended[layer][i]: keys and values [nKV][D].
    let appended: [[(keys: [Float], values: [Float])]]

    init(_ policy: CompressionPolicy, nQ: Int = 4, nKV: Int = 2, D: Int = 64, layers: Int = 1, n: Int,
         nWindow: Int, kind: KeyKind = .random, seed: UInt64, appends: Int = 0) throws {
        self.policy = policy
        var recovery = RefRecovery.mean
        if let r = RefRecovery(rawValue: policy.recovery.rawValue) { recovery = r }
        var cumulative = false, p: Float = 0.9, minKeep = 1, maxKeep = 0
        if case .cumulative(let cp, let lo, let hi) = policy.selection {
            (cumulative, p, minKeep, maxKeep) = (true, cp, lo, hi ?? 0)
        }
        config = RefConfig(nQ: nQ, nKV: nKV, D: D, r: policy.keyPruneRatio, cumulative: cumulative, p: p,
                           minKeep: minKeep, maxKeep: maxKeep, recovery: recovery, signs: policy.signBits,
                           keyPrecision: RefPrecision(policy.keyPrecision),
                           valuePrecision: RefPrecision(policy.valuePrecision), window: policy.window,
                           seed: policy.seed, attentionScale: policy.attentionScale ?? 0)
        shape = ModelShape(layers: layers, queryHeads: nQ, kvHeads: nKV, headDim: D, capacity: n + appends + 1)
        cache = try KVCache(shape: shape, policy: policy)
        var prompts: [TestPrompt] = [], appended: [[(keys: [Float], values: [Float])]] = []
        for layer in 0..<layers {
            let s = seed &+ UInt64(layer) &* 7919
            let prompt = TestData.prompt(config: config, n: n, nWindow: nWindow, kind: kind, seed: s)
            try cache.prefill(layer: layer, keys: prompt.keys, values: prompt.values,
                              windowQueries: nWindow > 0 ? prompt.qWindow : nil, tokenCount: n, windowCount: nWindow)
            var tokens: [(keys: [Float], values: [Float])] = []
            for a in 0..<appends {
                let token = TestData.appendToken(config: config, seed: s &+ UInt64(a) &+ 1, kind: kind)
                try cache.append(layer: layer, keys: token.keys, values: token.values)
                tokens.append(token)
            }
            prompts.append(prompt)
            appended.append(tokens)
        }
        self.prompts = prompts
        self.appended = appended
    }

    var D: Int { config.D }
    var scale: Double { config.softmaxScale }
    /// Window rows the policy uses.
    func u(_ layer: Int = 0) -> Int { min(policy.window, prompts[layer].nWindow) }

    /// Prompt tokens a layer holds (every head holds the same number).
    func keptCount(layer: Int = 0) throws -> Int { try cache.tokenCount(layer: layer) - appended[layer].count }

    /// The prompt indices of the tokens `layer`/`head` stores, found by matching each stored value
    /// against the prompt's value rows rounded to the value precision (random rows are unique).
    /// Requires a policy without value pruning.
    func storedTokens(layer: Int = 0, head: Int) throws -> [Int] {
        let prompt = prompts[layer]
        let precision = config.valuePrecision
        var index: [[UInt32]: Int] = [:]
        for t in 0..<prompt.n {
            index[PolicyRef.valueRow(prompt, head: head, token: t).map { precision.round($0).bitPattern }] = t
        }
        #expect(index.count == prompt.n, "value rows of head \(head) are not unique")
        return try (0..<keptCount(layer: layer)).map { t in
            let stored = try cache.value(layer: layer, kvHead: head, token: t).map(\.bitPattern)
            guard let original = index[stored] else {
                Issue.record("layer \(layer) head \(head): stored token \(t) matches no prompt value row")
                return -1
            }
            return original
        }
    }

    /// The rows [n][D] of `head` at `tokens` (prompt indices) followed by the appended rows, as
    /// the reference's dense attention wants them (rounded to the storage precisions).
    func denseRows(layer: Int = 0, head: Int, tokens: [Int]) -> (keys: [Float], values: [Float]) {
        let prompt = prompts[layer]
        var k: [Float] = [], v: [Float] = []
        for t in tokens {
            k += PolicyRef.keyRow(prompt, head: head, token: t).map { config.keyPrecision.round($0) }
            v += PolicyRef.valueRow(prompt, head: head, token: t).map { config.valuePrecision.round($0) }
        }
        for token in appended[layer] {
            k += token.keys[(head * D)..<((head + 1) * D)].map { config.keyPrecision.round($0) }
            v += token.values[(head * D)..<((head + 1) * D)].map { config.valuePrecision.round($0) }
        }
        return (k, v)
    }

    /// max |C attend - reference| / output scale for `queries` random decode queries, where the
    /// reference attends over `keys[head]`, `values[head]` ([n][D] each).
    func attentionError(layer: Int = 0, keys: [[Float]], values: [[Float]], queries: Int = 2,
                        querySeed: UInt64 = 77, queryScale: Float = 1) throws -> Double {
        let n = keys[0].count / D
        var worst = 0.0
        for i in 0..<queries {
            let q = TestData.query(config: config, seed: querySeed &+ UInt64(i), scale: queryScale)
            let got = try cache.attend(layer: layer, query: q)
            let want = RefMath.attention(q: q, keys: keys, values: values, n: n, config: config)
            worst = max(worst, Compare.maxAbsDiff(got, want) / max(Compare.maxAbs(want), 1e-3))
        }
        return worst
    }
}

/// The SparKVError `body` throws (an issue is recorded if it throws nothing or something else).
func thrownSparKVError(_ body: () throws -> Void) -> SparKVError? {
    #expect(throws: SparKVError.self) { try body() }
}

// MARK: - Pipeline tests

@Suite("Policy pipeline")
struct PolicyPipelineTests {
    struct CompositionCase: Sendable, CustomStringConvertible {
        var policy: CompressionPolicy
        var kind: KeyKind
        var layers = 1
        var description: String { "\(policy) \(kind)" }
    }

    static let compositionCases: [CompositionCase] = [
        CompositionCase(policy: .snapSpark(budget: 30, ratio: 0.75), kind: .random),
        CompositionCase(policy: .snapSpark(budget: 25, ratio: 0.5, recovery: .gaussian, poolKernel: 3), kind: .outlier),
        CompositionCase(policy: .spark(ratio: 0.8, recovery: .exponential).withEviction(.streamingLLM(sinks: 3, recent: 20)),
                        kind: .outlier),
        CompositionCase(policy: CompressionPolicy(eviction: .pyramidKV(meanBudget: 20, ratio: 3),
                                                  selection: .cumulative(p: 0.8, minKeep: 2, maxKeep: nil)),
                        kind: .random, layers: 3),
    ]

    @Test("eviction runs first, then SparK prunes the survivors as if they were the whole prompt",
          arguments: compositionCases)
    func sparkPrunesTheSurvivorsOfEviction(_ tc: CompositionCase) throws {
        var policy = tc.policy
        policy.window = 8
        policy.seed = 99
        let run = try PolicyRun(policy, nQ: 6, nKV: 2, D: 32, layers: tc.layers, n: 90, nWindow: 12,
                                kind: tc.kind, seed: 21, appends: 1)
        var failures: [String] = []
        for layer in 0..<tc.layers {
            let prompt = run.prompts[layer]
            let norms = RefMath.windowNorms(qWindow: prompt.qWindow, nWindow: prompt.nWindow, config: run.config)
            #expect(try run.keptCount(layer: layer) < prompt.n, "something was evicted")
            for head in 0..<2 {
                let stored = try run.storedTokens(layer: layer, head: head)
                #expect(stored == stored.sorted(), "survivors are stored in prompt order")
                for (index, t) in stored.enumerated() where t >= 0 {
                    // SparK on this row alone, with the window norms and the survivor's new index.
                    let want = RefMath.compress(key: PolicyRef.keyRow(prompt, head: head, token: t), qn: norms.qn[head],
                                                c: norms.c[head], config: run.config, layer: layer, head: head,
                                                token: index)
                    let mask = try run.cache.keptMask(layer: layer, kvHead: head, token: index)
                    let key = try run.cache.recoveredKey(layer: layer, kvHead: head, token: index)
                    if mask != want.mask { failures.append("layer \(layer) head \(head) token \(t): mask differs") }
                    for j in 0..<run.D where abs(key[j] - want.key[j]) > 2e-6 * max(abs(want.key[j]), 1e-3) {
                        failures.append("layer \(layer) head \(head) token \(t) (stored \(index)) channel \(j): "
                                        + "\(key[j]) vs \(want.key[j])")
                        break
                    }
                }
                let qn = try run.cache.windowQueryNorms(layer: layer, kvHead: head)
                #expect(qn.norms == norms.qn[head] && qn.scale == norms.c[head])
            }
            // The appended token stays dense.
            let last = try run.cache.tokenCount(layer: layer) - 1
            #expect(try run.cache.keptMask(layer: layer, kvHead: 1, token: last).allSatisfy { $0 })
        }
        #expect(failures.isEmpty, "\(failures.count) differences; first: \(failures.prefix(3))")
    }

    @Test("eviction then ThinK then value pruning: every stage sees the survivors")
    func thinkAndValuePruningApplyToTheSurvivors() throws {
        let policy = CompressionPolicy.think(ratio: 0.5).withEviction(.snapKV(budget: 16, poolKernel: 3))
        var withValues = policy.withValuePruning(ratio: 0.75)
        withValues.window = 6
        var plain = policy
        plain.window = 6
        // Same prompts: the value-pruned run's survivors are found through the plain run.
        let a = try PolicyRun(plain, nQ: 2, nKV: 1, D: 32, n: 50, nWindow: 6, seed: 4)
        let b = try PolicyRun(withValues, nQ: 2, nKV: 1, D: 32, n: 50, nWindow: 6, seed: 4)
        let stored = try a.storedTokens(head: 0)
        let prompt = a.prompts[0]
        #expect(stored == PolicyRef.snapKeep(prompt, head: 0, group: 2, window: 6, budget: 16, pool: 3, scale: a.scale))
        let norms = RefMath.windowNorms(qWindow: prompt.qWindow, nWindow: prompt.nWindow, config: a.config)
        let channels = PolicyRef.thinkChannels(rows: stored.map { PolicyRef.keyRow(prompt, head: 0, token: $0) },
                                               qn: norms.qn[0], u: 6, keep: 16)
        for (index, t) in stored.enumerated() {
            for run in [a, b] {
                #expect(try run.cache.keptMask(layer: 0, kvHead: 0, token: index) == channels)
                #expect(try run.cache.recoveredKey(layer: 0, kvHead: 0, token: index)
                        == PolicyRef.thinkKey(PolicyRef.keyRow(prompt, head: 0, token: t), mask: channels, precision: .f16))
            }
            #expect(try b.cache.value(layer: 0, kvHead: 0, token: index)
                    == PolicyRef.prunedValue(PolicyRef.valueRow(prompt, head: 0, token: t), keep: 8, precision: .f16))
        }
    }

    // MARK: Memory

    static let memoryPolicies: [CompressionPolicy] = [
        .dense,
        .spark(ratio: 0.8),
        .spark(ratio: 0.5, recovery: .gaussian, signBits: false),
        .snapKV(budget: 40),
        .pyramidKV(meanBudget: 30, ratio: 5, poolKernel: 1),
        .streamingLLM(sinks: 4, recent: 30),
        .streamingLLM(sinks: 100, recent: 100),
        .think(ratio: 0.75),
        .snapSpark(budget: 40, ratio: 0.8),
        .think(ratio: 0.5).withValuePruning(ratio: 0.5),
        .pyramidKV(meanBudget: 20).withValuePruning(ratio: 0.3),
        CompressionPolicy(eviction: .streamingLLM(sinks: 2, recent: 50), keyPruneRatio: 0.6, recovery: .exponential,
                          valuePruneRatio: 0.6, keyPrecision: .f32, valuePrecision: .bf16),
        CompressionPolicy(eviction: .snapKV(budget: 10), keyPruning: .think, keyPruneRatio: 0.25, recovery: .none,
                          signBits: false, valuePruneRatio: 0.9, keyPrecision: .bf16, valuePrecision: .f32),
        CompressionPolicy.dense.withValuePruning(ratio: 0.01),   // floor(0.64) = 0: values stay dense
    ]

    @Test("the memory report equals the header's formula for every policy", arguments: memoryPolicies)
    func memoryReportMatchesTheFormula(_ policy: CompressionPolicy) throws {
        let layers = 3, n = 70, nWindow = 10, appends = 2, H = 2, D = 64
        let run = try PolicyRun(policy, nQ: 4, nKV: H, D: D, layers: layers, n: n, nWindow: nWindow, seed: 8,
                                appends: appends)
        let kb = policy.keyPrecision.byteCount, vb = policy.valuePrecision.byteCount
        let T = run.config.topkKeep
        let Tv = D - Int((Double(policy.valuePruneRatio) * Double(D)).rounded(.down))
        var total = PolicyRef.Memory()
        for layer in 0..<layers {
            // Tokens each layer keeps, from the reference rules (independent of keptPromptTokens).
            let u = min(policy.window, nWindow)
            let kept: Int
            switch policy.eviction {
            case nil: kept = n
            case .snapKV(let budget, _)?: kept = budget + u
            case .pyramidKV(let mean, let ratio, _)?:
                kept = PolicyRef.pyramidBudget(mean: mean, ratio: Double(ratio), layer: layer, layers: layers,
                                               prefix: n - u) + u
            case .streamingLLM(let sinks, let recent)?:
                kept = PolicyRef.streamingKeep(n: n, sinks: sinks, recent: recent).count
            }
            #expect(try run.keptCount(layer: layer) == kept, "layer \(layer)")
            let keys: PolicyRef.KeyStorage
            if !run.config.prunes {
                keys = .dense
            } else if policy.keyPruning == .think {
                keys = .think(keep: T)
            } else {
                var keptChannels = 0
                for head in 0..<H {
                    for t in 0..<kept {
                        keptChannels += try run.cache.keptMask(layer: layer, kvHead: head, token: t).filter { $0 }.count
                    }
                }
                keys = .spark(keptChannels: keptChannels,
                              metaPerToken: D / 8 + (policy.signBits ? D / 8 : 0) + 2 * run.config.recovery.statCount)
            }
            let want = PolicyRef.memory(prompt: n, kept: kept, appended: appends, heads: H, D: D, keys: keys,
                                        keyBytes: kb, valueBytes: vb, valueKeep: Tv)
            let got = try run.cache.memoryReport(layer: layer)
            #expect(Self.fields(got) == want, "layer \(layer): got \(got)")
            #expect(got.reservedBytes >= got.totalBytes)
            total = total + want
        }
        let all = try run.cache.memoryReport()
        #expect(Self.fields(all) == total)
        // The Swift-side prediction agrees (reserved bytes are not predicted).
        if let predicted = policy.predictedMemory(shape: run.shape, promptTokens: n, windowCount: nWindow,
                                                  appendedTokens: appends) {
            #expect(Self.fields(predicted) == total)
        } else {
            #expect(policy.promptKeyBytesPerToken(headDim: D) == nil, "only cumulative selection is unpredictable")
        }
    }

    static func fields(_ m: MemoryReport) -> PolicyRef.Memory {
        PolicyRef.Memory(tokens: m.tokenCount, keyBytes: m.keyBytes, keyMetaBytes: m.keyMetaBytes,
                         valueBytes: m.valueBytes, valueMetaBytes: m.valueMetaBytes, totalBytes: m.totalBytes,
                         denseBytes: m.denseBytes)
    }

    @Test("per-token byte helpers follow the formulas")
    func footprintHelpers() {
        #expect(CompressionPolicy.think(ratio: 0.5).promptKeyBytesPerToken(headDim: 128) == 128)
        #expect(CompressionPolicy.think(ratio: 0.5).headMetadataBytes(headDim: 128) == 16)
        #expect(CompressionPolicy.think(ratio: 0.001).headMetadataBytes(headDim: 128) == 0)
        #expect(CompressionPolicy.snapSpark(budget: 8, ratio: 0.8).promptKeyBytesPerToken(headDim: 128) == 86)
        let v = CompressionPolicy.dense.withValuePruning(ratio: 0.5)
        #expect(v.keptValueChannels(headDim: 128) == 64 && v.prunesValues(headDim: 128))
        #expect(v.promptValueBytesPerToken(headDim: 128) == 128 && v.promptValueMetaBytesPerToken(headDim: 128) == 18)
        #expect(CompressionPolicy.dense.promptValueMetaBytesPerToken(headDim: 128) == 0)
        let pyramid = CompressionPolicy.Eviction.pyramidKV(meanBudget: 10, ratio: 4)
        #expect((0..<4).map { pyramid.budget(layer: $0, layers: 4) } == [16, 12, 8, 4])
        #expect(CompressionPolicy.snapKV(budget: 512).keptPromptTokens(promptTokens: 4096, windowCount: 32,
                                                                     layer: 0, layers: 32) == 544)
        #expect(CompressionPolicy.snapKV(budget: 512).keptPromptTokens(promptTokens: 500, windowCount: 32,
                                                                     layer: 0, layers: 1) == nil)
        #expect(CompressionPolicy.snapKV(budget: 5).keptPromptTokens(promptTokens: 500, windowCount: 0,
                                                                   layer: 0, layers: 1) == nil)
        #expect(CompressionPolicy.streamingLLM(sinks: 4, recent: 508).keptPromptTokens(
            promptTokens: 100, windowCount: 0, layer: 0, layers: 1) == 100)
    }

    // MARK: JSON and the compact form

    static let presets: [CompressionPolicy] = [
        .dense,
        .spark(ratio: 0.8),
        .spark(ratio: 0.5, recovery: .gaussian),
        .spark(ratio: 0.3, recovery: .none),
        .snapKV(budget: 512),
        .snapKV(budget: 100, poolKernel: 7),
        .pyramidKV(meanBudget: 512, ratio: 4),
        .pyramidKV(meanBudget: 256, ratio: 2.5, poolKernel: 1),
        .streamingLLM(sinks: 4, recent: 508),
        .streamingLLM(sinks: 0, recent: 1),
        .think(ratio: 0.5),
        .snapSpark(budget: 512, ratio: 0.8),
        .snapSpark(budget: 64, ratio: 0.7, recovery: .exponential, poolKernel: 9),
        .dense.withValuePruning(ratio: 0.5),
        .think(ratio: 0.25).withValuePruning(ratio: 0.125).withEviction(.streamingLLM(sinks: 2, recent: 100)),
        CompressionPolicy(eviction: .pyramidKV(meanBudget: 77, ratio: 1.1, poolKernel: 3), keyPruning: .spark,
                          keyPruneRatio: 0.1, selection: .cumulative(p: 0.95, minKeep: 3, maxKeep: 40),
                          recovery: .gaussian, signBits: false, valuePruneRatio: 0.333, keyPrecision: .bf16,
                          valuePrecision: .f32, window: 7, seed: .max, threads: 2, attentionScale: 0.07),
        CompressionPolicy(keyPruning: .think, keyPruneRatio: 0.5, selection: .cumulative(p: 0.5, minKeep: 1, maxKeep: nil),
                          recovery: .mean, signBits: true, attentionScale: 3e9),   // invalid, still representable
        CompressionPolicy(keyPruneRatio: 0, recovery: .exponential),
    ]

    @Test("every preset round-trips through JSON, the compact form and the C struct", arguments: presets)
    func presetsRoundTrip(_ policy: CompressionPolicy) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(policy)
        let decoded = try JSONDecoder().decode(CompressionPolicy.self, from: data)
        #expect(decoded == policy)
        #expect(try encoder.encode(decoded) == data)

        let compact = policy.description
        #expect(try CompressionPolicy(parsing: compact) == policy, "\(compact)")
        #expect(CompressionPolicy(compact) == policy)
        #expect(!compact.contains(" "))

        #expect(try CompressionPolicy(cPolicy: policy.cPolicy()) == policy)
    }

    @Test("pipeline JSON is stable and readable")
    func pipelineJSONIsStable() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(CompressionPolicy.snapSpark(budget: 512, ratio: 0.8)
            .withValuePruning(ratio: 0.5)), as: UTF8.self)
        #expect(json == #"{"attention_scale":null,"compress_decode":false,"decode_recent":32,"#
                + #""eviction":{"budget":512,"mode":"snapkv","pool_kernel":5},"#
                + #""key_precision":"f16","key_prune_ratio":0.8,"key_pruning":"spark","quant_group":32,"recovery":"mean","seed":0,"#
                + #""selection":{"mode":"topk"},"sign_bits":true,"threads":null,"value_precision":"f16","#
                + #""value_prune_ratio":0.5,"window":32}"#)
        let pyramid = String(decoding: try encoder.encode(CompressionPolicy.Eviction.pyramidKV(meanBudget: 9, ratio: 2)),
                             as: UTF8.self)
        #expect(pyramid == #"{"mean_budget":9,"mode":"pyramidkv","pool_kernel":5,"ratio":2}"#)
        let streaming = String(decoding: try encoder.encode(CompressionPolicy.Eviction.streamingLLM(sinks: 4, recent: 8)),
                               as: UTF8.self)
        #expect(streaming == #"{"mode":"streaming","recent_tokens":8,"sink_tokens":4}"#)
    }

    @Test("JSON written before the pipeline keys existed decodes to their defaults")
    func oldJSONDecodesToDefaults() throws {
        let old = #"{"attention_scale":null,"key_precision":"f16","key_prune_ratio":0.8,"recovery":"mean","#
            + #""seed":0,"selection":{"mode":"topk"},"sign_bits":true,"threads":null,"value_precision":"f16","window":32}"#
        let policy = try JSONDecoder().decode(CompressionPolicy.self, from: Data(old.utf8))
        #expect(policy == .spark(ratio: 0.8))
        #expect(policy.eviction == nil && policy.keyPruning == .spark && policy.valuePruneRatio == 0)

        let partial = #"{"eviction": {"mode": "pyramidkv"}, "key_pruning": "think", "key_prune_ratio": 0.5, "recovery": "none", "sign_bits": false}"#
        #expect(try JSONDecoder().decode(CompressionPolicy.self, from: Data(partial.utf8))
                == CompressionPolicy.think(ratio: 0.5).withEviction(.pyramidKV(meanBudget: 512, ratio: 4, poolKernel: 5)))
        #expect(try JSONDecoder().decode(CompressionPolicy.self, from: Data(#"{"eviction": null}"#.utf8)) == .dense)

        for bad in [#"{"eviction": {"mode": "h2o"}}"#, #"{"key_pruning": "thinq"}"#, #"{"eviction": {"budget": 5}}"#] {
            #expect(throws: DecodingError.self, "\(bad)") {
                try JSONDecoder().decode(CompressionPolicy.self, from: Data(bad.utf8))
            }
        }
        // A memory report written before value pruning existed.
        let report = #"{"n_tokens":1,"key_bytes":2,"key_meta_bytes":3,"value_bytes":4,"total_bytes":9,"dense_bytes":10,"reserved_bytes":11}"#
        #expect(try JSONDecoder().decode(MemoryReport.self, from: Data(report.utf8)).valueMetaBytes == 0)
    }

    @Test("the compact form reads both spellings and names the defaults")
    func compactFormParses() throws {
        #expect(try CompressionPolicy(parsing: "snapkv:512+spark:0.8") == .snapSpark(budget: 512, ratio: 0.8))
        #expect(try CompressionPolicy(parsing: "snapkv(512)+spark(0.8,mean,signed)") == .snapSpark(budget: 512, ratio: 0.8))
        #expect(CompressionPolicy.snapSpark(budget: 512, ratio: 0.8).description == "snapkv(512)+spark(0.8,mean,signed)")
        #expect(try CompressionPolicy(parsing: " Spark( 0.8 ) + SnapKV : 512 ") == .snapSpark(budget: 512, ratio: 0.8))
        #expect(try CompressionPolicy(parsing: "dense") == .dense)
        #expect(CompressionPolicy.dense.description == "dense")
        #expect(try CompressionPolicy(parsing: "snapkv") == .snapKV(budget: 512, poolKernel: 5))
        #expect(try CompressionPolicy(parsing: "streaming") == .streamingLLM(sinks: 4, recent: 508))
        #expect(try CompressionPolicy(parsing: "streamingllm:4:1020") == .streamingLLM(sinks: 4, recent: 1020))
        #expect(try CompressionPolicy(parsing: "pyramidkv(256,2)") == .pyramidKV(meanBudget: 256, ratio: 2))
        #expect(try CompressionPolicy(parsing: "think:0.5") == .think(ratio: 0.5))
        #expect(try CompressionPolicy(parsing: "spark(0.5,none)") == .spark(ratio: 0.5, recovery: .none))
        #expect(try CompressionPolicy(parsing: "spark(gaussian,unsigned,0.5)")
                == .spark(ratio: 0.5, recovery: .gaussian, signBits: false))
        #expect(try CompressionPolicy(parsing: "spark(cum=0.9,max=64)")
                == CompressionPolicy(selection: .cumulative(p: 0.9, minKeep: 1, maxKeep: 64)))
        #expect(try CompressionPolicy(parsing: "vprune:0.5") == .dense.withValuePruning(ratio: 0.5))
        #expect(try CompressionPolicy(parsing: "kprec:bf16+dense") == CompressionPolicy(keyPrecision: .bf16))
        #expect(try CompressionPolicy(parsing: "dense+vprec(f32)+window(64)+seed(7)+threads(2)+scale(1e+10)")
                == CompressionPolicy(valuePrecision: .f32, window: 64, seed: 7, threads: 2, attentionScale: 1e10))
        #expect(CompressionPolicy(valuePrecision: .f32, window: 64, attentionScale: 1e10).description
                == "dense+vprec(f32)+window(64)+scale(1e10)")
        #expect(CompressionPolicy.think(ratio: 0.5).withValuePruning(ratio: 0.25).description == "think(0.5)+vprune(0.25)")
        #expect(CompressionPolicy.pyramidKV(meanBudget: 512, ratio: 4).description == "pyramidkv(512)")
        #expect(CompressionPolicy.streamingLLM(sinks: 4, recent: 508).description == "streaming(4,508)")
        // The grammar is documented where the CLIs can show it.
        for word in ["snapkv", "pyramidkv", "streaming", "spark", "think", "vprune", "kprec", "vprec", "cum="] {
            #expect(CompressionPolicy.compactGrammar.contains(word))
        }
    }

    @Test("unreadable compact forms throw invalidPolicy naming the problem", arguments: [
        ("", "empty"), ("spark", "needs a ratio"), ("snapkv:512+snapkv:256", "twice"), ("snapkv:512+streaming", "twice"),
        ("spark:0.5+think:0.5", "twice"), ("h2o:512", "unknown term"), ("spark(0.5", "parenthesis"),
        ("spark(0.5,median)", "median"), ("snapkv(a)", "not an integer"), ("vprune", "takes 1"),
        ("streaming(4)", "two arguments"), ("kprec(f8)", "f8"), ("dense+spark:0.5", "dense"), ("spark:0.5+", "empty term"),
        ("spark(min=3,0.5)", "cum"), ("snapkv(1,2,3)", "0 to 2"), ("seed(-1)", "unsigned"),
    ])
    func compactFormErrors(_ text: String, _ reason: String) {
        let error = thrownSparKVError { _ = try CompressionPolicy(parsing: text) }
        guard case .invalidPolicy(let detail)? = error else {
            Issue.record("\(text): expected .invalidPolicy, got \(String(describing: error))")
            return
        }
        #expect(detail.contains(reason), "\(text): \(detail)")
        #expect(CompressionPolicy(text) == nil)
    }

    // MARK: Validation

    static let invalidPolicies: [(CompressionPolicy, String)] = [
        (.snapKV(budget: -1), "budget -1"),
        (.snapKV(budget: 0), "evict_budget"),
        (.snapKV(budget: 8, poolKernel: 4), "pool_kernel 4"),
        (.snapKV(budget: 8, poolKernel: -3), "poolKernel -3"),
        (.pyramidKV(meanBudget: -5), "meanBudget -5"),
        (.pyramidKV(meanBudget: 64, ratio: 0.5), "pyramid_ratio"),
        (.pyramidKV(meanBudget: 64, ratio: .nan), "pyramid_ratio"),
        (.streamingLLM(sinks: -1, recent: 8), "sinks -1"),
        (.streamingLLM(sinks: 4, recent: -8), "recent -8"),
        (.streamingLLM(sinks: 0, recent: 0), "sink_tokens + recent_tokens"),
        (.think(ratio: 1), "key_prune_ratio"),
        (CompressionPolicy(keyPruning: .think, keyPruneRatio: 0.5), "recovery"),
        (CompressionPolicy(keyPruning: .think, keyPruneRatio: 0.5, recovery: .none), "sign_bits"),
        (CompressionPolicy(keyPruning: .think, keyPruneRatio: 0.5, selection: .cumulative(p: 0.9, minKeep: 1, maxKeep: nil),
                           recovery: .none, signBits: false), "TOPK"),
        (.dense.withValuePruning(ratio: 1), "value_prune_ratio"),
        (.dense.withValuePruning(ratio: -0.1), "value_prune_ratio"),
        (.spark(ratio: 0.5).withValuePruning(ratio: .infinity), "value_prune_ratio"),
        (.spark(ratio: -0.5), "key_prune_ratio"),
        (.snapSpark(budget: 8, ratio: 1.5), "key_prune_ratio"),
    ]

    @Test("invalid parameters throw invalidPolicy, from validate and from KVCache", arguments: invalidPolicies)
    func invalidParametersThrow(_ policy: CompressionPolicy, _ reason: String) throws {
        let error = thrownSparKVError { try policy.validate(headDim: 64) }
        guard case .invalidPolicy(let detail)? = error else {
            Issue.record("\(policy): expected .invalidPolicy, got \(String(describing: error))")
            return
        }
        #expect(detail.contains(reason), "\(policy): \(detail)")
        let shape = ModelShape(layers: 1, queryHeads: 2, kvHeads: 1, headDim: 64, capacity: 8)
        let created = thrownSparKVError { _ = try KVCache(shape: shape, policy: policy) }
        #expect(created == error)
        // Where the C struct can hold the policy, the verdict is the C library's own.
        if var c = try? policy.cPolicy() {
            #expect(sparkv_policy_validate(&c, 64) == SPARKV_ERR_INVALID_POLICY)
            #expect(String(cString: sparkv_last_error(nil)) == detail)
        }
    }

    @Test("every preset is valid, and Swift's verdict is the C library's", arguments: presets)
    func validationAgreesWithTheLibrary(_ policy: CompressionPolicy) throws {
        var c = try policy.cPolicy()
        let status = sparkv_policy_validate(&c, 64)
        if status == SPARKV_OK {
            try policy.validate(headDim: 64)
        } else {
            let error = thrownSparKVError { try policy.validate(headDim: 64) }
            #expect(error?.status == Int32(status.rawValue))
        }
        // Only the deliberately invalid ThinK preset is rejected.
        #expect((status == SPARKV_OK) == !(policy.keyPruning == .think && policy.recovery != .none))
    }

    @Test("a budget larger than the prompt is an error of prefill, which leaves the layer empty")
    func budgetsBeyondThePromptFailAtPrefill() throws {
        let shape = ModelShape(layers: 2, queryHeads: 2, kvHeads: 1, headDim: 16, capacity: 64)
        let config = RefConfig(nQ: 2, nKV: 1, D: 16)
        let prompt = TestData.prompt(config: config, n: 40, nWindow: 8, kind: .random, seed: 1)
        for policy in [CompressionPolicy.snapKV(budget: 33), .pyramidKV(meanBudget: 33), .snapSpark(budget: 40, ratio: 0.5)] {
            try policy.validate(headDim: 16)
            let cache = try KVCache(shape: shape, policy: policy)
            let error = thrownSparKVError {
                try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.qWindow,
                                  tokenCount: 40, windowCount: 8)
            }
            #expect(error?.status == 5, "\(policy): \(String(describing: error))")
            #expect(error?.detail.contains("exceeds") == true, "\(policy): \(String(describing: error))")
            #expect(try cache.tokenCount(layer: 0) == 0)
            // 32 = 40 - 8 fits.
            #expect(policy.keptPromptTokens(promptTokens: 40, windowCount: 8, layer: 0, layers: 2) == nil)
        }
        let fits = try KVCache(shape: shape, policy: .snapKV(budget: 32))
        try fits.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.qWindow,
                         tokenCount: 40, windowCount: 8)
        #expect(try fits.tokenCount(layer: 0) == 40)
        // Scoring evictions need the window even for dense keys; so does key pruning. Swift reports
        // the missing window as .window (C would see a NULL q_window).
        for policy in [CompressionPolicy.snapKV(budget: 4), .pyramidKV(meanBudget: 4), .think(ratio: 0.5), .spark(ratio: 0.5)] {
            let cache = try KVCache(shape: shape, policy: policy)
            let noWindow = thrownSparKVError {
                try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, tokenCount: 40)
            }
            #expect(noWindow?.status == 10 && noWindow?.detail.contains("windowQueries") == true,
                    "\(policy): \(String(describing: noWindow))")
        }
        let streaming = try KVCache(shape: shape, policy: .streamingLLM(sinks: 2, recent: 6))
        try streaming.prefill(layer: 0, keys: prompt.keys, values: prompt.values, tokenCount: 40)
        #expect(try streaming.tokenCount(layer: 0) == 8)
    }
}
