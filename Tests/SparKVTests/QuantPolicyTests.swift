// QuantPolicyTests.swift — the Swift policy API of quantized (int8 / int4) storage: precisions,
// quantGroup, their C conversion, JSON and compact forms, presets, validation, the footprint
// formulas against the library's memory report, and the error bound of stored values read back
// through KVCache inspection.

import CSparKV
import Foundation
import Testing

@testable import SparKV

@Suite("Quantized policies (Swift API)")
struct QuantPolicyTests {
    /// Two layers, GQA group 2, D = 128.
    static let shape = ModelShape(layers: 2, queryHeads: 4, kvHeads: 2, headDim: 128, capacity: 96)
    static let promptTokens = 40, windowCount = 8

    /// Policies covering every stage combined with quantized storage.
    static let policies: [CompressionPolicy] = [
        .quantized(keys: .i8, values: .i8),
        .quantized(keys: .i4, values: .i4, group: 64),
        .quantized(keys: .i8, values: .f16, group: 8),
        .spark(ratio: 0.8).withPrecision(keys: .i8, values: .i8),
        .spark(ratio: 0.8).withPrecision(keys: .i4, values: .i4),
        .spark(ratio: 0.5, recovery: .gaussian).withPrecision(keys: .i4, values: .i8, group: 16),
        .think(ratio: 0.5).withPrecision(keys: .i8, values: .i4),
        .spark(ratio: 0.75).withValuePruning(ratio: 0.5).withPrecision(keys: .i8, values: .i4, group: 128),
        .snapSpark(budget: 16, ratio: 0.8).withPrecision(keys: .i4, values: .i8),
        .streamingLLM(sinks: 4, recent: 20).withPrecision(keys: .bf16, values: .i4),
    ]

    // MARK: Value type, presets, C conversion

    @Test func precisionsDescribeTheirStorage() {
        typealias P = CompressionPolicy.Precision
        #expect(P(rawValue: "i8") == .i8 && P(rawValue: "i4") == .i4)
        #expect(P.allCases.map(\.rawValue) == ["f32", "f16", "bf16", "i8", "i4"])
        #expect([P.f32, .f16, .bf16, .i8, .i4].map { $0.rowBytes(13) } == [52, 26, 26, 13, 7])
        #expect([P.f32, .f16, .bf16, .i8, .i4].map { $0.scaleBytes(4) } == [0, 0, 0, 8, 8])
        #expect([P.f32, .f16, .bf16, .i8, .i4].map(\.bitCount) == [32, 16, 16, 8, 4])
        #expect(P.i8.quantMax == 127 && P.i4.quantMax == 7 && P.f16.quantMax == nil)
        #expect(P.i8.isQuantized && P.i4.isQuantized && !P.bf16.isQuantized)
    }

    @Test func presetsSetPrecisionsAndGroup() {
        let q = CompressionPolicy.quantized(keys: .i8, values: .i4)
        #expect(q.keyPrecision == .i8 && q.valuePrecision == .i4 && q.quantGroup == 32)
        #expect(q.keyPruneRatio == 0 && q.eviction == nil && q.valuePruneRatio == 0)
        #expect(!q.prunes(headDim: 128) && q.isQuantized)
        #expect(CompressionPolicy.quantized(keys: .i4, values: .i4, group: 64).quantGroup == 64)
        #expect(CompressionPolicy().quantGroup == 32 && !CompressionPolicy.dense.isQuantized)

        let base = CompressionPolicy.snapSpark(budget: 512, ratio: 0.8)
        var expected = base
        expected.keyPrecision = .i8
        expected.valuePrecision = .i4
        #expect(base.withPrecision(keys: .i8, values: .i4) == expected)
        expected.quantGroup = 64
        #expect(base.withPrecision(keys: .i8, values: .i4, group: 64) == expected)
        // nil keeps the current precision.
        #expect(base.withPrecision(values: .i8).keyPrecision == .f16)
        #expect(base.withPrecision(keys: .i4).valuePrecision == .f16)
    }

    @Test(arguments: policies)
    func cRoundTripKeepsPrecisionsAndGroup(policy: CompressionPolicy) throws {
        let c = try policy.cPolicy()
        #expect(c.quant_group == UInt32(policy.quantGroup))
        #expect(c.key_precision == policy.keyPrecision.cValue && c.value_precision == policy.valuePrecision.cValue)
        #expect(try CompressionPolicy(cPolicy: c) == policy)
        try policy.validate(headDim: 128)
    }

    @Test func cEnumValuesMatchTheHeader() throws {
        var c = sparkv_default_policy()
        #expect(c.quant_group == 32)
        c.key_precision = SPARKV_I8
        c.value_precision = SPARKV_I4
        c.quant_group = 16
        let p = try CompressionPolicy(cPolicy: c)
        #expect(p.keyPrecision == .i8 && p.valuePrecision == .i4 && p.quantGroup == 16)
        #expect(SPARKV_I8.rawValue == 3 && SPARKV_I4.rawValue == 4)
        c.key_precision = sparkv_precision(rawValue: 9)
        #expect(throws: SparKVError.self) { try CompressionPolicy(cPolicy: c) }
    }

    // MARK: JSON

    @Test(arguments: policies)
    func jsonRoundTrips(policy: CompressionPolicy) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(policy)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains(#""quant_group":\#(policy.quantGroup)"#))
        #expect(text.contains(#""key_precision":"\#(policy.keyPrecision.rawValue)""#))
        let decoded = try JSONDecoder().decode(CompressionPolicy.self, from: data)
        #expect(decoded == policy)
        #expect(try encoder.encode(decoded) == data)
    }

    @Test func jsonWithoutQuantGroupDecodesToTheDefault() throws {
        let old = #"{"key_prune_ratio": 0.8, "key_precision": "i8", "value_precision": "i4"}"#
        let p = try JSONDecoder().decode(CompressionPolicy.self, from: Data(old.utf8))
        #expect(p == CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i4))
        #expect(p.quantGroup == 32)
        let grouped = #"{"value_precision": "i4", "quant_group": 64}"#
        #expect(try JSONDecoder().decode(CompressionPolicy.self, from: Data(grouped.utf8))
                == CompressionPolicy.quantized(keys: .f16, values: .i4, group: 64))
        let bad = #"{"key_precision": "i2"}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(CompressionPolicy.self, from: Data(bad.utf8)) }
    }

    // MARK: Compact form

    @Test(arguments: policies)
    func compactFormRoundTrips(policy: CompressionPolicy) throws {
        let text = policy.description
        #expect(try CompressionPolicy(parsing: text) == policy, "\(text)")
        #expect(CompressionPolicy(text) == policy)
        #expect(text.contains("qgroup") == (policy.quantGroup != 32), "\(text)")
    }

    @Test func compactFormSpellings() throws {
        #expect(try CompressionPolicy(parsing: "spark(0.8)+kprec(i8)+vprec(i8)")
                == CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i8))
        #expect(try CompressionPolicy(parsing: "spark:0.8 + kprec:I4 + vprec:i4 + qgroup:64")
                == CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i4, values: .i4, group: 64))
        #expect(try CompressionPolicy(parsing: "vprec(i4)") == .quantized(keys: .f16, values: .i4))
        #expect(try CompressionPolicy(parsing: "dense+qgroup(16)") == CompressionPolicy(quantGroup: 16))
        #expect(CompressionPolicy.quantized(keys: .i8, values: .i8).description == "dense+kprec(i8)+vprec(i8)")
        #expect(CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i4, group: 64).description
                == "spark(0.8,mean,signed)+kprec(i8)+vprec(i4)+qgroup(64)")
        #expect(CompressionPolicy.snapSpark(budget: 512, ratio: 0.8).withPrecision(keys: .i8, values: .i4).description
                == "snapkv(512)+spark(0.8,mean,signed)+kprec(i8)+vprec(i4)")
        #expect(CompressionPolicy.compactGrammar.contains("qgroup(N)"))
        for bad in ["kprec(i2)", "qgroup(x)", "qgroup()", "qgroup(8,16)", "qgroup(8)+qgroup(16)"] {
            #expect(throws: SparKVError.self, "\(bad)") { try CompressionPolicy(parsing: bad) }
        }
    }

    // MARK: Validation

    @Test(arguments: [(12, 128), (48, 128), (0, 128), (256, 128), (24, 64), (4, 8)])
    func invalidQuantGroupThrowsInvalidPolicy(group: Int, headDim: Int) throws {
        for precisions in [(CompressionPolicy.Precision.i8, CompressionPolicy.Precision.f16), (.f16, .i4), (.i4, .i8)] {
            let policy = CompressionPolicy.quantized(keys: precisions.0, values: precisions.1, group: group)
            let error = #expect(throws: SparKVError.self) { try policy.validate(headDim: headDim) }
            guard case .invalidPolicy(let detail)? = error else {
                Issue.record("expected .invalidPolicy, got \(String(describing: error))")
                continue
            }
            #expect(!detail.isEmpty)
            let shape = ModelShape(layers: 1, queryHeads: 2, kvHeads: 1, headDim: headDim, capacity: 16)
            let created = #expect(throws: SparKVError.self) { _ = try KVCache(shape: shape, policy: policy) }
            if case .invalidPolicy? = created {} else { Issue.record("KVCache: expected .invalidPolicy, got \(String(describing: created))") }
        }
        // Ignored when nothing is quantized.
        try CompressionPolicy(quantGroup: group).validate(headDim: headDim)
    }

    @Test func quantGroupsThatFitAreValid() throws {
        for (group, d) in [(8, 8), (8, 128), (32, 128), (64, 128), (128, 128), (24, 48), (256, 256)] {
            try CompressionPolicy.quantized(keys: .i4, values: .i8, group: group).validate(headDim: d)
        }
    }

    @Test func negativeQuantGroupIsRejectedInSwift() {
        let error = #expect(throws: SparKVError.self) {
            _ = try CompressionPolicy.quantized(keys: .i8, values: .i8, group: -32).cPolicy()
        }
        if case .invalidPolicy? = error {} else { Issue.record("expected .invalidPolicy, got \(String(describing: error))") }
    }

    // MARK: Footprint formulas

    @Test func footprintMatchesTheHeaderExamples() {
        let spark = CompressionPolicy.spark(ratio: 0.8)
        #expect(spark.withPrecision(keys: .i8).promptKeyBytesPerToken(headDim: 128) == 62)
        #expect(spark.withPrecision(keys: .i4).promptKeyBytesPerToken(headDim: 128) == 49)
        #expect(spark.promptKeyBytesPerToken(headDim: 128) == 86)
        #expect(spark.withPrecision(keys: .i8).promptKeyPayloadBytesPerToken(headDim: 128) == 26)
        #expect(spark.withPrecision(keys: .i4).promptKeyMetaBytesPerToken(headDim: 128) == 36)
        let v8 = CompressionPolicy.quantized(keys: .f16, values: .i8)
        #expect(v8.promptValueBytesPerToken(headDim: 128) + v8.promptValueMetaBytesPerToken(headDim: 128) == 136)
        let v4 = CompressionPolicy.quantized(keys: .f16, values: .i4)
        #expect(v4.promptValueBytesPerToken(headDim: 128) + v4.promptValueMetaBytesPerToken(headDim: 128) == 72)
        #expect(CompressionPolicy.dense.promptValueMetaBytesPerToken(headDim: 128) == 0)
        let q8 = CompressionPolicy.quantized(keys: .i8, values: .i8)
        #expect(q8.promptKeyBytesPerToken(headDim: 128) == 136 && q8.appendedKeyBytesPerToken(headDim: 128) == 136)
        #expect(CompressionPolicy.quantized(keys: .i4, values: .i4, group: 64).appendedKeyBytesPerToken(headDim: 128) == 68)
        #expect(CompressionPolicy.think(ratio: 0.5).withPrecision(keys: .i4).promptKeyBytesPerToken(headDim: 128) == 34)
        // Value pruning: one scale per token besides mask and fill.
        let vp = CompressionPolicy.dense.withValuePruning(ratio: 0.5).withPrecision(values: .i4)
        #expect(vp.promptValueBytesPerToken(headDim: 128) == 32 && vp.promptValueMetaBytesPerToken(headDim: 128) == 20)
    }

    /// Prefills every layer of a cache (40 tokens, window 8), appends `appends` tokens per layer.
    static func filledCache(_ policy: CompressionPolicy, appends: Int = 3, seed: UInt64 = 11) throws -> KVCache {
        let cache = try KVCache(shape: shape, policy: policy)
        let data = SyntheticKV(shape: shape, seed: seed)
        for layer in 0..<shape.layers {
            try cache.prefill(layer: layer, keys: data.keys(layer: layer, tokens: 0..<promptTokens),
                              values: data.values(layer: layer, tokens: 0..<promptTokens),
                              windowQueries: data.queries(layer: layer, positions: promptTokens - windowCount..<promptTokens),
                              tokenCount: promptTokens, windowCount: windowCount)
            for t in 0..<appends {
                let token = promptTokens + t
                try cache.append(layer: layer, keys: data.keys(layer: layer, tokens: token..<token + 1),
                                 values: data.values(layer: layer, tokens: token..<token + 1))
            }
        }
        return cache
    }

    @Test func sparkInt8ReportsTheFootprintFormula() throws {
        let policy = try CompressionPolicy(parsing: "spark(0.8)+kprec(i8)+vprec(i8)")
        let cache = try Self.filledCache(policy)
        let report = try cache.memoryReport()
        var predicted = try #require(policy.predictedMemory(shape: Self.shape, promptTokens: Self.promptTokens,
                                                            windowCount: Self.windowCount, appendedTokens: 3))
        #expect(report.reservedBytes >= report.totalBytes)
        predicted.reservedBytes = report.reservedBytes
        #expect(report == predicted)
        // Spelled out: per layer and KV head, 40 SparK tokens of 26 + (16 + 16 + 2 + 2) bytes of K,
        // 3 appended keys of 128 + 8, per-head qn and c; values 43 * (128 + 8).
        let layerHeads = Self.shape.layers * Self.shape.kvHeads
        #expect(report.keyBytes == layerHeads * (40 * 26 + 3 * 128))
        #expect(report.keyMetaBytes == layerHeads * (40 * 36 + 3 * 8 + 128 * 4 + 4))
        #expect(report.valueBytes == layerHeads * 43 * 128)
        #expect(report.valueMetaBytes == layerHeads * 43 * 8)
    }

    @Test(arguments: policies)
    func memoryReportMatchesTheFootprintFormula(policy: CompressionPolicy) throws {
        let cache = try Self.filledCache(policy, appends: 2)
        for layer in 0..<Self.shape.layers {
            _ = try cache.memoryReport(layer: layer)
        }
        let report = try cache.memoryReport()
        var predicted = try #require(policy.predictedMemory(shape: Self.shape, promptTokens: Self.promptTokens,
                                                            windowCount: Self.windowCount, appendedTokens: 2))
        predicted.reservedBytes = report.reservedBytes
        #expect(report == predicted, "\(policy)")
    }

    // MARK: Stored values within scale / 2

    /// The documented bound of x in a run of largest magnitude amax: s/2 with s = fp16(amax / Q),
    /// plus the clamp of a value fp16's rounding of s pushed past the grid.
    static func bound(_ x: Float, amax: Float, qmax: Int) -> Float {
        let quotient = amax / Float(qmax)
        let s = quotient >= 65504 ? 65504 : Float(Float16(quotient))
        return s / 2 * (1 + 0x1p-20) + max(0, abs(x) - Float(qmax) * s)
    }

    static func checkRuns(stored: [Float], input: [Float], runs: [[Int]], qmax: Int, what: String) {
        for run in runs where !run.isEmpty {
            let amax = run.map { abs(input[$0]) }.max()!
            for j in run {
                let err = abs(stored[j] - input[j])
                #expect(err <= bound(input[j], amax: amax, qmax: qmax),
                        "\(what) channel \(j): stored \(stored[j]) input \(input[j]) amax \(amax)")
            }
        }
    }

    @Test(arguments: [
        CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i8),
        CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i4, values: .i4, group: 16),
        CompressionPolicy.quantized(keys: .i8, values: .i4, group: 64),
        CompressionPolicy.think(ratio: 0.5).withPrecision(keys: .i4, values: .i8, group: 128),
        CompressionPolicy.spark(ratio: 0.5).withValuePruning(ratio: 0.5).withPrecision(keys: .i8, values: .i8, group: 8),
    ])
    func storedValuesAreWithinHalfAScale(policy: CompressionPolicy) throws {
        let appends = 2
        let cache = try Self.filledCache(policy, appends: appends, seed: 5)
        let data = SyntheticKV(shape: Self.shape, seed: 5)
        let d = Self.shape.headDim, g = policy.quantGroup, total = Self.promptTokens + appends
        let kq = try #require(policy.keyPrecision.quantMax), vq = try #require(policy.valuePrecision.quantMax)
        let groups = stride(from: 0, to: d, by: g).map { Array($0..<$0 + g) }
        for layer in 0..<Self.shape.layers {
            let keys = data.keys(layer: layer, tokens: 0..<total), values = data.values(layer: layer, tokens: 0..<total)
            for h in 0..<Self.shape.kvHeads {
                for t in 0..<total {
                    let row = (h * total + t) * d
                    let k = Array(keys[row..<row + d]), v = Array(values[row..<row + d])
                    let appended = t >= Self.promptTokens
                    let what = "\(policy) layer \(layer) head \(h) token \(t)"

                    let mask = try cache.keptMask(layer: layer, kvHead: h, token: t)
                    let storedKey = try cache.recoveredKey(layer: layer, kvHead: h, token: t)
                    if appended || !policy.prunes(headDim: d) {
                        #expect(mask.allSatisfy { $0 })
                        Self.checkRuns(stored: storedKey, input: k, runs: groups, qmax: kq, what: "key of " + what)
                    } else {
                        let kept = (0..<d).filter { mask[$0] }
                        #expect(kept.count == policy.keptChannels(headDim: d))
                        Self.checkRuns(stored: storedKey, input: k, runs: [kept], qmax: kq, what: "kept key of " + what)
                    }

                    let storedValue = try cache.value(layer: layer, kvHead: h, token: t)
                    if !appended && policy.prunesValues(headDim: d) {
                        // Kept values: the largest |v|, sharing one scale.
                        let order = (0..<d).sorted { abs(v[$0]) != abs(v[$1]) ? abs(v[$0]) > abs(v[$1]) : $0 < $1 }
                        let kept = Array(order.prefix(policy.keptValueChannels(headDim: d)))
                        Self.checkRuns(stored: storedValue, input: v, runs: [kept], qmax: vq, what: "kept value of " + what)
                    } else {
                        Self.checkRuns(stored: storedValue, input: v, runs: groups, qmax: vq, what: "value of " + what)
                    }
                }
            }
        }
    }

    /// int8 attention of a cache built through the Swift API against the independent double-precision
    /// reference (Reference.swift's SparK with QuantRef's int8 as sparkv.h documents it: symmetric,
    /// fp16 scales), not against the library's own f16 cache. The tolerance is float rounding (1e-5
    /// of the output scale); the same reference in f16 lies far outside it, so a library that stored
    /// f16 (or another grid) would fail.
    @Test func int8AttentionMatchesTheReference() throws {
        let policy = CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i8)
        let cache = try Self.filledCache(policy, seed: 2)
        let data = SyntheticKV(shape: Self.shape, seed: 2)
        let s = Self.shape, n = Self.promptTokens, appends = 3
        func reference(layer: Int, _ format: QFormat, _ q: [Float]) -> [Double] {
            let tc = QuantCase(keys: .spark, D: s.headDim, group: s.queryHeads / s.kvHeads, nKV: s.kvHeads, r: 0.8,
                               recovery: .mean, signs: true, kFormat: format, vFormat: format,
                               quantGroup: policy.quantGroup, n: n, appends: appends)
            let prompt = TestPrompt(nKV: s.kvHeads, nQ: s.queryHeads, D: s.headDim, n: n, nWindow: Self.windowCount,
                                    keys: data.keys(layer: layer, tokens: 0..<n),
                                    values: data.values(layer: layer, tokens: 0..<n),
                                    qWindow: data.queries(layer: layer, positions: n - Self.windowCount..<n))
            let appended = (n..<n + appends).map {
                (keys: data.keys(layer: layer, tokens: $0..<$0 + 1), values: data.values(layer: layer, tokens: $0..<$0 + 1))
            }
            return QuantRefLayer(tc, prompt: prompt, appended: appended).attend(q)
        }
        for layer in 0..<s.layers {
            let q = data.queries(layer: layer, positions: 50..<51)
            let want = reference(layer: layer, .i8, q)
            let tolerance = 1e-5 * want.map(abs).max()!
            for kernel in KVCache.Kernel.allCases where kernel != .auto && kernel.isSupported {
                try cache.setKernel(kernel)
                let got = try cache.attend(layer: layer, query: q)
                let err = zip(got, want).map { abs(Double($0) - $1) }.max()!
                #expect(err <= tolerance, "layer \(layer) \(kernel.name): max |attend - reference| \(err) > \(tolerance)")
            }
            let f16 = reference(layer: layer, .f16, q)
            let gap = zip(f16, want).map { abs($0 - $1) }.max()!
            #expect(gap > 20 * tolerance, "layer \(layer): the tolerance cannot tell int8 from f16 storage (gap \(gap))")
        }
    }
}
