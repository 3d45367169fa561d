import CSparKV
import Foundation
import Testing

@testable import SparKV

/// The Swift layer: value types, typed errors, buffer checks, convenience overloads, JSON, and
/// the synthetic data generator. The C kernels are pinned by the other suites.
@Suite("Swift API")
struct SwiftAPITests {
    /// Two layers, GQA group 2, D = 64: small enough to check by hand.
    static let small = ModelShape(layers: 2, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 64)

    /// Prompt data for `small`: 40 tokens, window 8.
    struct Prompt {
        var keys: [Float], values: [Float], window: [Float]
        let tokens = 40, windowCount = 8

        init(layer: Int = 0, seed: UInt64 = 3) {
            let data = SyntheticKV(shape: SwiftAPITests.small, seed: seed)
            keys = data.keys(layer: layer, tokens: 0..<tokens)
            values = data.values(layer: layer, tokens: 0..<tokens)
            window = data.queries(layer: layer, positions: tokens - windowCount..<tokens)
        }
    }

    /// Runs `body` and returns the SparKVError it throws (recording an issue if it does not).
    static func sparkvError(_ body: () throws -> Void) -> SparKVError? {
        #expect(throws: SparKVError.self) { try body() }
    }

    // MARK: Policies

    @Test func defaultPolicyIsTheLibraryDefault() throws {
        let fromC = try CompressionPolicy(cPolicy: sparkv_default_policy())
        #expect(CompressionPolicy() == fromC)
        #expect(CompressionPolicy.dense == fromC)
        #expect(try CompressionPolicy(cPolicy: CompressionPolicy.spark(ratio: 0.8).cPolicy()) == .spark(ratio: 0.8))
    }

    @Test func sparkPresetPrunesWithMeanRecoveryAndSignBits() throws {
        let p = CompressionPolicy.spark(ratio: 0.8)
        #expect(p.keyPruneRatio == 0.8)
        #expect(p.selection == .topK)
        #expect(p.recovery == .mean)
        #expect(p.signBits)
        #expect(p.keyPrecision == .f16 && p.valuePrecision == .f16)
        #expect(p.keptChannels(headDim: 128) == 26)
        #expect(p.promptKeyBytesPerToken(headDim: 128) == 86)
        #expect(CompressionPolicy.spark(ratio: 0.5).promptKeyBytesPerToken(headDim: 128) == 162)
        #expect(CompressionPolicy.dense.promptKeyBytesPerToken(headDim: 128) == 256)
        #expect(!CompressionPolicy.dense.prunes(headDim: 128))
        // Without recovery there is nothing to apply signs to: the preset drops them.
        let none = CompressionPolicy.spark(ratio: 0.5, recovery: .none)
        #expect(!none.signBits)
        try none.validate(headDim: 128)
        try CompressionPolicy.spark(ratio: 0.8, recovery: .gaussian).validate(headDim: 64)
    }

    @Test func invalidPoliciesThrowInvalidPolicyWithTheReason() throws {
        let ratio = Self.sparkvError { try CompressionPolicy.spark(ratio: 1.5).validate(headDim: 128) }
        #expect(ratio == .invalidPolicy(ratio?.detail ?? ""))
        #expect(ratio?.status == 5)
        #expect(ratio?.detail.contains("key_prune_ratio") == true)
        #expect(ratio?.description.contains("the compression policy has a value out of range") == true)

        let signs = Self.sparkvError {
            try CompressionPolicy(keyPruneRatio: 0.5, recovery: .none, signBits: true).validate(headDim: 128)
        }
        #expect(signs?.detail.contains("sign_bits") == true)

        let clamp = Self.sparkvError {
            try CompressionPolicy(selection: .cumulative(p: 0.9, minKeep: 100, maxKeep: nil)).validate(headDim: 64)
        }
        #expect(clamp?.status == 5)

        // Swift spellings of C sentinels are rejected in Swift, with a hint.
        let threads = Self.sparkvError { try CompressionPolicy(threads: 0).validate(headDim: 128) }
        #expect(threads?.status == 5 && threads?.detail.contains("nil") == true)
        let window = Self.sparkvError { try CompressionPolicy(window: 0).validate(headDim: 128) }
        #expect(window?.status == 5)
        let scale = Self.sparkvError { try CompressionPolicy(attentionScale: 0).validate(headDim: 128) }
        #expect(scale?.status == 5)
        let negativeScale = Self.sparkvError { try CompressionPolicy(attentionScale: -1).validate(headDim: 128) }
        #expect(negativeScale?.detail.contains("attention_scale") == true)

        let headDim = Self.sparkvError { try CompressionPolicy.dense.validate(headDim: 100) }
        guard case .headDim(let detail) = headDim else {
            Issue.record("expected .headDim, got \(String(describing: headDim))")
            return
        }
        #expect(detail.contains("100"))
    }

    @Test func cacheCreationRejectsInvalidPolicyAndShape() {
        let policy = Self.sparkvError { _ = try KVCache(shape: Self.small, policy: .spark(ratio: 1)) }
        #expect(policy?.status == 5)

        var gqa = Self.small
        gqa.queryHeads = 3
        let g = Self.sparkvError { _ = try KVCache(shape: gqa) }
        #expect(g?.status == 4)
        #expect(g?.detail.contains("not a multiple") == true)
    }

    @Test func shapeValidationAgreesWithTheLibrary() throws {
        try ModelShape.llama3_8B(capacity: 4096).validate()
        try ModelShape.smolLM2_135M(capacity: 2048).validate()
        #expect(ModelShape.llama3_8B(capacity: 1).groupSize == 4)
        #expect(ModelShape.smolLM2_135M(capacity: 1) == ModelShape(layers: 30, queryHeads: 9, kvHeads: 3, headDim: 64, capacity: 1))

        let gqa = Self.sparkvError { try ModelShape(layers: 1, queryHeads: 6, kvHeads: 4, headDim: 64, capacity: 8).validate() }
        #expect(gqa?.status == 4)
        let dim = Self.sparkvError { try ModelShape(layers: 1, queryHeads: 4, kvHeads: 4, headDim: 100, capacity: 8).validate() }
        #expect(dim?.status == 3)
        let zero = Self.sparkvError { try ModelShape(layers: 0, queryHeads: 4, kvHeads: 4, headDim: 64, capacity: 8).validate() }
        #expect(zero?.status == 2)
        let negative = Self.sparkvError { try ModelShape(layers: 1, queryHeads: 4, kvHeads: 4, headDim: 64, capacity: -5).validate() }
        #expect(negative == .invalidShape("capacity is -5; it must be between 1 and \(UInt64.max)"))
    }

    // MARK: JSON

    @Test(arguments: [
        CompressionPolicy.dense,
        .spark(ratio: 0.8),
        .spark(ratio: 0.5, recovery: .gaussian),
        .spark(ratio: 0.3, recovery: .none),
        CompressionPolicy(keyPruneRatio: 0.25, selection: .cumulative(p: 0.9, minKeep: 4, maxKeep: nil),
                          recovery: .exponential, signBits: false, keyPrecision: .bf16, valuePrecision: .f32,
                          window: 16, seed: .max, threads: 3, attentionScale: 0.1),
        CompressionPolicy(selection: .cumulative(p: 0.123456789, minKeep: 0, maxKeep: 64), seed: 1 << 60 + 7),
    ])
    func policyJSONRoundTripsExactly(_ policy: CompressionPolicy) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(policy)
        let decoded = try JSONDecoder().decode(CompressionPolicy.self, from: data)
        #expect(decoded == policy)
        #expect(try encoder.encode(decoded) == data)
    }

    @Test func policyJSONIsStableAndReadable() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(CompressionPolicy.spark(ratio: 0.8)), as: UTF8.self)
        #expect(json == #"{"attention_scale":null,"compress_decode":false,"decode_recent":32,"eviction":null,"#
                + #""key_precision":"f16","key_prune_ratio":0.8,"#
                + #""key_pruning":"spark","quant_group":32,"recovery":"mean","seed":0,"selection":{"mode":"topk"},"sign_bits":true,"#
                + #""threads":null,"value_precision":"f16","value_prune_ratio":0,"window":32}"#)

        let cumulative = String(decoding: try encoder.encode(
            CompressionPolicy.Selection.cumulative(p: 0.9, minKeep: 1, maxKeep: nil)), as: UTF8.self)
        #expect(cumulative == #"{"max_keep":null,"min_keep":1,"mode":"cumulative","p":0.9}"#)
    }

    @Test func policyJSONMayOmitDefaultsButNotMisspellEnums() throws {
        let partial = #"{"key_prune_ratio": 0.5, "recovery": "gaussian"}"#
        let decoded = try JSONDecoder().decode(CompressionPolicy.self, from: Data(partial.utf8))
        #expect(decoded == .spark(ratio: 0.5, recovery: .gaussian))

        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(CompressionPolicy.self, from: Data(#"{"recovery": "median"}"#.utf8))
        }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(CompressionPolicy.self, from: Data(#"{"selection": {"mode": "topp"}}"#.utf8))
        }
    }

    @Test func memoryReportAndShapeRoundTripThroughJSON() throws {
        let report = MemoryReport(tokenCount: 1, keyBytes: 2, keyMetaBytes: 3, valueBytes: 4, totalBytes: 9,
                                  denseBytes: 10, reservedBytes: 11)
        let data = try JSONEncoder().encode(report)
        #expect(try JSONDecoder().decode(MemoryReport.self, from: data) == report)
        #expect(String(decoding: data, as: UTF8.self).contains(#""key_meta_bytes":3"#))
        #expect(report.ratioToDense == 0.9)
        let shape = ModelShape.llama3_8B(capacity: 100)
        #expect(try JSONDecoder().decode(ModelShape.self, from: JSONEncoder().encode(shape)) == shape)
    }

    // MARK: KVCache

    @Test func arrayAndBufferOverloadsGiveTheSameResult() throws {
        let prompt = Prompt()
        let a = try KVCache(shape: Self.small, policy: .spark(ratio: 0.5))
        let b = try KVCache(shape: Self.small, policy: .spark(ratio: 0.5))
        try a.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                      tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        try prompt.keys.withUnsafeBufferPointer { k in
            try prompt.values.withUnsafeBufferPointer { v in
                try prompt.window.withUnsafeBufferPointer { q in
                    try b.prefill(layer: 0, keys: k, values: v, windowQueries: q, tokenCount: prompt.tokens,
                                  windowCount: prompt.windowCount)
                }
            }
        }
        let data = SyntheticKV(shape: Self.small, seed: 3)
        let k = data.keys(layer: 0, tokens: 40..<41), v = data.values(layer: 0, tokens: 40..<41)
        try a.append(layer: 0, keys: k, values: v)
        try k.withUnsafeBufferPointer { k in try v.withUnsafeBufferPointer { v in try b.append(layer: 0, keys: k, values: v) } }
        #expect(try a.tokenCount(layer: 0) == 41)
        #expect(try b.tokenCount(layer: 0) == 41)
        #expect(try a.tokenCount(layer: 1) == 0)

        let query = data.queries(layer: 0, positions: 40..<41)
        let returned = try a.attend(layer: 0, query: query)
        var reused: [Float] = []
        try a.attend(layer: 0, query: query, into: &reused)
        var buffered = [Float](repeating: .nan, count: 4 * 64)
        try query.withUnsafeBufferPointer { q in
            try buffered.withUnsafeMutableBufferPointer { o in try b.attend(layer: 0, query: q, into: o) }
        }
        #expect(returned.count == 4 * 64)
        #expect(returned == reused)
        #expect(returned == buffered)
        #expect(returned.allSatisfy { $0.isFinite })
    }

    @Test func densePolicyNeedsNoWindow() throws {
        let prompt = Prompt()
        let cache = try KVCache(shape: Self.small)
        try cache.prefill(layer: 1, keys: prompt.keys, values: prompt.values, tokenCount: prompt.tokens)
        #expect(try cache.tokenCount(layer: 1) == prompt.tokens)
        let norms = try cache.windowQueryNorms(layer: 1, kvHead: 1)
        #expect(norms.norms.allSatisfy { $0 == 0 } && norms.scale == 1)
    }

    @Test func wrongBufferSizesThrowInvalidShapeAndLeaveTheCacheEmpty() throws {
        let prompt = Prompt()
        let cache = try KVCache(shape: Self.small, policy: .spark(ratio: 0.8))
        let short = Array(prompt.keys.dropLast())

        let keys = Self.sparkvError {
            try cache.prefill(layer: 0, keys: short, values: prompt.values, windowQueries: prompt.window,
                              tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        }
        #expect(keys == .invalidShape("prefill: keys hold 5119 elements; [kvHeads 2][tokenCount 40][headDim 64] needs 5120"))
        let values = Self.sparkvError {
            try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values + [0],
                              windowQueries: prompt.window, tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        }
        #expect(values?.status == 2 && values?.detail.contains("values") == true)
        let window = Self.sparkvError {
            try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                              tokenCount: prompt.tokens, windowCount: prompt.windowCount + 1)
        }
        #expect(window?.status == 2 && window?.detail.contains("windowQueries") == true)
        let uncounted = Self.sparkvError {
            try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                              tokenCount: prompt.tokens)
        }
        #expect(uncounted?.status == 2 && uncounted?.detail.contains("windowCount is 0") == true)
        let noTokens = Self.sparkvError {
            try cache.prefill(layer: 0, keys: [Float](), values: [Float](), tokenCount: 0)
        }
        #expect(noTokens?.status == 2)
        let layer = Self.sparkvError {
            try cache.prefill(layer: 2, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                              tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        }
        #expect(layer == .layer("prefill: layer 2 is out of range (layers = 2)"))
        let negativeLayer = Self.sparkvError { _ = try cache.tokenCount(layer: -1) }
        #expect(negativeLayer?.status == 7)

        // Nothing reached the cache: it is still empty, and a correct prefill is still allowed.
        #expect(try cache.tokenCount(layer: 0) == 0)
        #expect(try cache.memoryReport().totalBytes == 0)
        try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                          tokenCount: prompt.tokens, windowCount: prompt.windowCount)

        let append = Self.sparkvError { try cache.append(layer: 0, keys: [Float](repeating: 0, count: 64), values: [Float](repeating: 0, count: 128)) }
        #expect(append == .invalidShape("append: keys hold 64 elements; [kvHeads 2][headDim 64] needs 128"))
        let attend = Self.sparkvError { _ = try cache.attend(layer: 0, query: [Float](repeating: 0, count: 128)) }
        #expect(attend?.status == 2 && attend?.detail.contains("query") == true)
        #expect(try cache.tokenCount(layer: 0) == prompt.tokens)

        // Overlapping query and output buffers are refused rather than passed to C.
        var shared = [Float](repeating: 0.1, count: 4 * 64 + 1)
        let overlap = Self.sparkvError {
            try shared.withUnsafeMutableBufferPointer { all in
                let q = UnsafeBufferPointer(rebasing: all[0..<256])
                try cache.attend(layer: 0, query: q, into: UnsafeMutableBufferPointer(rebasing: all[1..<257]))
            }
        }
        #expect(overlap?.detail.contains("overlaps") == true)
    }

    @Test func libraryErrorsCarryTheDetailOfTheCall() throws {
        let prompt = Prompt()
        let cache = try KVCache(shape: Self.small, policy: .spark(ratio: 0.5))
        let empty = Self.sparkvError { _ = try cache.attend(layer: 0, query: [Float](repeating: 0, count: 256)) }
        guard case .empty = empty else {
            Issue.record("expected .empty, got \(String(describing: empty))")
            return
        }
        #expect(empty?.description.hasPrefix("the layer holds no token") == true)

        try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                          tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        let twice = Self.sparkvError {
            try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                              tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        }
        #expect(twice?.status == 9)
        #expect(twice?.detail.contains("already holds 40 tokens") == true)

        var poisoned = prompt.values
        poisoned[5] = .nan
        let nan = Self.sparkvError {
            try cache.prefill(layer: 1, keys: prompt.keys, values: poisoned, windowQueries: prompt.window,
                              tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        }
        #expect(nan?.status == 6)
        #expect(try cache.tokenCount(layer: 1) == 0)

        // Every C status maps to its own case and back.
        for code in UInt32(1)...15 {
            let error = SparKVError(status: sparkv_status(rawValue: code), detail: "d")
            #expect(error?.status == Int32(code))
            #expect(error?.detail == "d")
            #expect(error?.statusSentence == String(cString: sparkv_status_string(sparkv_status(rawValue: code))))
        }
        #expect(SparKVError(status: SPARKV_OK, detail: "") == nil)
        #expect(SparKVError(status: sparkv_status(rawValue: 99), detail: "x") == .unknown(status: 99, "x"))
    }

    @Test func memoryReportMatchesTheFormula() throws {
        let prompt = Prompt()
        let cache = try KVCache(shape: Self.small, policy: .spark(ratio: 0.8))
        try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                          tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        // D = 64, r = 0.8: T = 64 - floor(51.2) = 13 kept; 8 mask + 8 sign + 2 mean bytes per token.
        let heads = 2, n = prompt.tokens
        var expected = MemoryReport(tokenCount: n, keyBytes: heads * n * 13 * 2,
                                    keyMetaBytes: heads * (n * 18 + 64 * 4 + 4), valueBytes: heads * n * 64 * 2,
                                    totalBytes: 0, denseBytes: heads * n * 64 * 4, reservedBytes: 0)
        expected.totalBytes = expected.keyBytes + expected.keyMetaBytes + expected.valueBytes
        var layer0 = try cache.memoryReport(layer: 0)
        #expect(layer0.reservedBytes >= layer0.totalBytes)
        expected.reservedBytes = layer0.reservedBytes
        #expect(layer0 == expected)
        #expect(try cache.memoryReport() == layer0)
        #expect(try cache.memoryReport(layer: 1).totalBytes == 0)
        #expect(CompressionPolicy.spark(ratio: 0.8).promptKeyBytesPerToken(headDim: 64) == 13 * 2 + 18)
        #expect(abs(layer0.ratioToDense - Double(expected.totalBytes) / Double(expected.denseBytes)) < 1e-15)

        // An appended token is dense: D f16 keys and values per head, no metadata.
        let data = SyntheticKV(shape: Self.small, seed: 3)
        try cache.append(layer: 0, keys: data.keys(layer: 0, tokens: 40..<41), values: data.values(layer: 0, tokens: 40..<41))
        layer0 = try cache.memoryReport(layer: 0)
        #expect(layer0.keyBytes == expected.keyBytes + heads * 64 * 2)
        #expect(layer0.keyMetaBytes == expected.keyMetaBytes)
        #expect(layer0.valueBytes == expected.valueBytes + heads * 64 * 2)
        #expect(layer0.tokenCount == n + 1)

        let bad = Self.sparkvError { _ = try cache.memoryReport(layer: 2) }
        #expect(bad?.status == 7)
    }

    @Test func kernelsCanBeChosenAndAgree() throws {
        let prompt = Prompt()
        let cache = try KVCache(shape: Self.small, policy: .spark(ratio: 0.5))
        #expect(cache.kernel != .auto)
        #expect(cache.kernel.isSupported)
        #expect(KVCache.Kernel.portable.isSupported && KVCache.Kernel.auto.isSupported)
        #expect(KVCache.Kernel.allCases.map(\.name) == ["auto", "portable", "avx2", "avx512"])
        try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                          tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        let query = SyntheticKV(shape: Self.small, seed: 3).queries(layer: 0, positions: 39..<40)

        try cache.setKernel(.portable)
        #expect(cache.kernel == .portable)
        let reference = try cache.attend(layer: 0, query: query)
        for kernel in KVCache.Kernel.allCases {
            guard kernel.isSupported else {
                let error = Self.sparkvError { try cache.setKernel(kernel) }
                #expect(error?.status == 12)
                continue
            }
            try cache.setKernel(kernel)
            #expect(cache.kernel == (kernel == .auto ? cache.kernel : kernel))
            let out = try cache.attend(layer: 0, query: query)
            for (a, b) in zip(out, reference) { #expect(abs(a - b) <= 1e-4 * max(1, abs(b))) }
        }
    }

    @Test func inspectionShowsKeptChannelsAndStoredValues() throws {
        let prompt = Prompt()
        let cache = try KVCache(shape: Self.small, policy: .spark(ratio: 0.8))
        try cache.prefill(layer: 0, keys: prompt.keys, values: prompt.values, windowQueries: prompt.window,
                          tokenCount: prompt.tokens, windowCount: prompt.windowCount)
        let d = 64
        for (head, token) in [(0, 0), (1, 17), (1, 39)] {
            let mask = try cache.keptMask(layer: 0, kvHead: head, token: token)
            #expect(mask.count == d)
            #expect(mask.filter { $0 }.count == 13)
            let key = try cache.recoveredKey(layer: 0, kvHead: head, token: token)
            let original = Array(prompt.keys[(head * prompt.tokens + token) * d..<(head * prompt.tokens + token + 1) * d])
            for j in 0..<d where mask[j] { #expect(key[j] == Float(Float16(original[j]))) }
            let value = try cache.value(layer: 0, kvHead: head, token: token)
            let originalValue = prompt.values[(head * prompt.tokens + token) * d..<(head * prompt.tokens + token + 1) * d]
            #expect(value == originalValue.map { Float(Float16($0)) })
        }
        let norms = try cache.windowQueryNorms(layer: 0, kvHead: 1)
        #expect(norms.norms.count == d && norms.norms.allSatisfy { $0 > 0 })
        let mean = norms.norms.reduce(0.0) { $0 + Double($1) } / Double(d)
        #expect(abs(Double(norms.scale) - mean) <= 1e-5 * mean)

        let head = Self.sparkvError { _ = try cache.keptMask(layer: 0, kvHead: 2, token: 0) }
        #expect(head?.status == 15)
        let token = Self.sparkvError { _ = try cache.value(layer: 0, kvHead: 0, token: 40) }
        #expect(token?.status == 15)

        let z = KVCache.recoveryDraw(seed: 1, layer: 0, kvHead: 0, token: 5, channel: 3, recovery: .gaussian)
        let e = KVCache.recoveryDraw(seed: 1, layer: 0, kvHead: 0, token: 5, channel: 3, recovery: .exponential)
        #expect(abs(z) < 2.52 && e > 0 && e * e < 5.16)
        #expect(KVCache.recoveryDraw(seed: 1, layer: 0, kvHead: 0, token: 5, channel: 3, recovery: .mean) == 0)
    }

    // MARK: SyntheticKV

    @Test func syntheticDataIsDeterministicPerSeed() throws {
        let shape = ModelShape.llama3_8B(capacity: 1)
        let a = SyntheticKV(shape: shape, seed: 11), b = SyntheticKV(shape: shape, seed: 11)
        let c = SyntheticKV(shape: shape, seed: 12)
        #expect(a.keys(layer: 1, tokens: 0..<300) == b.keys(layer: 1, tokens: 0..<300))
        #expect(a.values(layer: 1, tokens: 0..<300) == b.values(layer: 1, tokens: 0..<300))
        #expect(a.queries(layer: 1, positions: 0..<300) == b.queries(layer: 1, positions: 0..<300))
        #expect(a.keys(layer: 1, tokens: 0..<300) != c.keys(layer: 1, tokens: 0..<300))
        #expect(a.values(layer: 1, tokens: 0..<300) != c.values(layer: 1, tokens: 0..<300))
        #expect(a.queries(layer: 1, positions: 0..<300) != c.queries(layer: 1, positions: 0..<300))
        #expect(a.keys(layer: 0, tokens: 0..<8) != a.keys(layer: 1, tokens: 0..<8))

        // A token's rows do not depend on the range (or parallel chunking) that generated them.
        let d = shape.headDim, n = 300
        let all = a.keys(layer: 1, tokens: 0..<n)
        for t in [0, 63, 64, 299] {
            let one = a.keys(layer: 1, tokens: t..<t + 1)
            for h in 0..<shape.kvHeads {
                #expect(Array(all[(h * n + t) * d..<(h * n + t + 1) * d]) == Array(one[h * d..<(h + 1) * d]))
            }
        }
        var filled = [Float](repeating: 0, count: all.count)
        try filled.withUnsafeMutableBufferPointer { try a.fillKeys(layer: 1, tokens: 0..<n, into: $0) }
        #expect(filled == all)
        let wrong = Self.sparkvError {
            try filled.withUnsafeMutableBufferPointer { try a.fillValues(layer: 1, tokens: 0..<(n + 1), into: $0) }
        }
        #expect(wrong?.status == 2)
        #expect(a.keys(layer: 0, tokens: 5..<5).isEmpty)
    }

    @Test func syntheticKeysHaveOutlierChannelsAndHeavyTails() {
        let shape = ModelShape.llama3_8B(capacity: 1)
        let data = SyntheticKV(shape: shape, seed: 0)
        let n = 2048, d = shape.headDim
        let keys = data.keys(layer: 0, tokens: 0..<n)
        var maxAbs: Float = 0
        for h in 0..<shape.kvHeads {
            let outliers = data.outlierChannels(layer: 0, kvHead: h)
            #expect(outliers.count == 4)
            // Two adjacent RoPE pairs in the low-frequency half of the head.
            #expect(outliers.allSatisfy { $0 >= d / 2 && $0 < d })
            #expect(outliers[0] % 2 == 0 && outliers[1] == outliers[0] + 1)
            #expect(outliers[2] % 2 == 0 && outliers[3] == outliers[2] + 1)

            var meanAbs = [Double](repeating: 0, count: d)
            for t in 0..<n {
                for j in 0..<d {
                    let k = keys[(h * n + t) * d + j]
                    meanAbs[j] += Double(abs(k)) / Double(n)
                    maxAbs = max(maxAbs, abs(k))
                }
            }
            let median = meanAbs.sorted()[d / 2]
            for j in outliers { #expect(meanAbs[j] > 10 * median, "head \(h) channel \(j)") }
            let loudest = meanAbs.indices.sorted { meanAbs[$0] > meanAbs[$1] }.prefix(4).sorted()
            #expect(loudest == outliers)
        }
        #expect(maxAbs > 60)

        // Heavy tails: Laplace noise times a log-normal token scale has kurtosis well above a
        // Gaussian's 3. Measured on a high-frequency channel, where RoPE spins the mean away.
        let samples = (0..<n).map { Double(keys[$0 * d + 1]) }
        let mean = samples.reduce(0, +) / Double(n)
        let m2 = samples.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n)
        let m4 = samples.reduce(0) { $0 + ($1 - mean) * ($1 - mean) * ($1 - mean) * ($1 - mean) } / Double(n)
        #expect(m4 / (m2 * m2) > 4)
    }

    @Test func syntheticDataRunsThroughACache() throws {
        let shape = ModelShape.smolLM2_135M(capacity: 300)
        let data = SyntheticKV(shape: shape, seed: 5, ropeBase: 10_000)
        let cache = try KVCache(shape: shape, policy: .spark(ratio: 0.8, recovery: .exponential))
        try cache.prefill(layer: 29, keys: data.keys(layer: 29, tokens: 0..<256),
                          values: data.values(layer: 29, tokens: 0..<256),
                          windowQueries: data.queries(layer: 29, positions: 224..<256), tokenCount: 256, windowCount: 32)
        let out = try cache.attend(layer: 29, query: data.queries(layer: 29, positions: 256..<257))
        #expect(out.count == shape.queryHeads * shape.headDim && out.allSatisfy { $0.isFinite })
        #expect(KVCache.libraryVersion == String(cString: sparkv_version_string()))
    }
}
