// ElementTypeTests.swift — Float16 and BFloat16 inputs: the same cache as the Float values they
// widen to, and their errors.

import SparKV
import Testing

@Suite struct ElementTypeTests {
    static let shape = ModelShape(layers: 2, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 300)
    static let tokens = 256, windowCount = 16

    /// Keys, values and window queries as `Float` values exactly representable in `E`.
    struct Inputs<E: KVElement> {
        var keys: [E], values: [E], window: [E]
        var keysF: [Float], valuesF: [Float], windowF: [Float]
    }

    static func inputs<E: KVElement>(_ convert: (Float) -> E, _ widen: (E) -> Float) -> Inputs<E> {
        let data = SyntheticKV(shape: shape, seed: 11)
        let k = data.keys(layer: 0, tokens: 0..<tokens).map(convert)
        let v = data.values(layer: 0, tokens: 0..<tokens).map(convert)
        let q = data.queries(layer: 0, positions: tokens - windowCount..<tokens).map(convert)
        return Inputs(keys: k, values: v, window: q, keysF: k.map(widen), valuesF: v.map(widen),
                      windowF: q.map(widen))
    }

    static let policies: [CompressionPolicy] = [
        .spark(ratio: 0.8), .think(ratio: 0.5), .snapKV(budget: 100),
        .spark(ratio: 0.7).withPrecision(keys: .i8, values: .i4), .dense.withValuePruning(ratio: 0.5),
    ]

    /// Everything a cache holds for layer 0 that a caller can read, plus one attention output.
    static func contents(_ cache: KVCache) throws -> [Float] {
        var all: [Float] = []
        let n = try cache.tokenCount(layer: 0)
        for h in 0..<shape.kvHeads {
            for t in 0..<n {
                all += try cache.recoveredKey(layer: 0, kvHead: h, token: t)
                all += try cache.value(layer: 0, kvHead: h, token: t)
            }
        }
        let q = SyntheticKV(shape: shape, seed: 12).queries(layer: 0, positions: 0..<1)
        return all + (try cache.attend(layer: 0, query: q))
    }

    func sameCacheAsFloat<E: KVElement>(_ input: Inputs<E>) throws {
        for policy in Self.policies {
            let typed = try KVCache(shape: Self.shape, policy: policy)
            let float = try KVCache(shape: Self.shape, policy: policy)
            try typed.prefill(layer: 0, keys: input.keys, values: input.values, windowQueries: input.window,
                              tokenCount: Self.tokens, windowCount: Self.windowCount)
            try float.prefill(layer: 0, keys: input.keysF, values: input.valuesF, windowQueries: input.windowF,
                              tokenCount: Self.tokens, windowCount: Self.windowCount)
            let step = Self.shape.kvHeads * Self.shape.headDim
            try typed.append(layer: 0, keys: Array(input.keys[0..<step]), values: Array(input.values[0..<step]))
            try float.append(layer: 0, keys: Array(input.keysF[0..<step]), values: Array(input.valuesF[0..<step]))
            let a = try Self.contents(typed), b = try Self.contents(float)
            #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(E.kvElementType) inputs, policy \(policy)")
            #expect(try typed.memoryReport() == float.memoryReport())
        }
    }

    @Test func float16InputsGiveTheCacheOfTheirFloatValues() throws {
        try sameCacheAsFloat(Self.inputs({ Float16($0) }, { Float($0) }))
    }

    @Test func bfloat16InputsGiveTheCacheOfTheirFloatValues() throws {
        try sameCacheAsFloat(Self.inputs({ BFloat16($0) }, { Float($0) }))
    }

    @Test func sixteenBitInfinityIsNonFiniteAndLeavesTheLayerEmpty() throws {
        var input = Self.inputs({ Float16($0) }, { Float($0) })
        input.keys[Self.tokens * 64 + 3 * 64 + 7] = .infinity // head 1, row 3, channel 7
        let cache = try KVCache(shape: Self.shape, policy: .spark(ratio: 0.8))
        #expect(throws: SparKVError.nonFinite("keys contain Inf at head 1, row 3, channel 7")) {
            try cache.prefill(layer: 0, keys: input.keys, values: input.values, windowQueries: input.window,
                              tokenCount: Self.tokens, windowCount: Self.windowCount)
        }
        #expect(try cache.tokenCount(layer: 0) == 0)
    }

    @Test func finiteBFloat16BeyondFloat16StorageIsARangeError() throws {
        var input = Self.inputs({ BFloat16($0) }, { Float($0) })
        input.values[5] = BFloat16(100_000)
        let cache = try KVCache(shape: Self.shape, policy: .spark(ratio: 0.8))
        let error = #expect(throws: SparKVError.self) {
            try cache.prefill(layer: 0, keys: input.keys, values: input.values, windowQueries: input.window,
                              tokenCount: Self.tokens, windowCount: Self.windowCount)
        }
        guard case .range(let detail) = error else {
            Issue.record("expected a range error, got \(String(describing: error))")
            return
        }
        #expect(detail.contains("values contain 99840 at head 0, row 0, channel 5"))
        #expect(try cache.tokenCount(layer: 0) == 0)
    }

    @Test func bfloat16RoundsToNearestEven() {
        #expect(BFloat16(1.0).bitPattern == 0x3F80)
        #expect(BFloat16(Float(bitPattern: 0x3F80_8000)).bitPattern == 0x3F80) // tie, even stays
        #expect(BFloat16(Float(bitPattern: 0x3F81_8000)).bitPattern == 0x3F82) // tie, odd rounds up
        #expect(BFloat16(Float(bitPattern: 0x3F80_8001)).bitPattern == 0x3F81)
        #expect(BFloat16(-2.5).floatValue == -2.5)
        #expect(BFloat16(.infinity).bitPattern == 0x7F80)
        #expect(BFloat16(Float.greatestFiniteMagnitude).bitPattern == 0x7F80) // rounds to infinity
        #expect(BFloat16(.nan).floatValue.isNaN)
        #expect(Float(BFloat16(bitPattern: 0x0001)) == Float(bitPattern: 0x0001_0000)) // subnormal, exact
    }
}
