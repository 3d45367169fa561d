// BatchAttendTests.swift — KVCache.attend(batch:): each row equals the cache's own attend.

import SparKV
import Testing

@Suite struct BatchAttendTests {
    static let shape = ModelShape(layers: 1, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 800)

    static func cache(_ policy: CompressionPolicy, tokens: Int, seed: UInt64) throws -> KVCache {
        let data = SyntheticKV(shape: shape, seed: seed)
        let c = try KVCache(shape: shape, policy: policy)
        try c.prefill(layer: 0, keys: data.keys(layer: 0, tokens: 0..<tokens), values: data.values(layer: 0, tokens: 0..<tokens),
                      windowQueries: data.queries(layer: 0, positions: tokens - 8..<tokens), tokenCount: tokens,
                      windowCount: 8)
        return c
    }

    @Test func eachRowIsTheCachesOwnAttention() throws {
        let caches = [try Self.cache(.spark(ratio: 0.8), tokens: 600, seed: 1), try Self.cache(.dense, tokens: 9, seed: 2),
                      try Self.cache(.spark(ratio: 0.5, recovery: .exponential), tokens: 257, seed: 3)]
        let batch = caches + [caches[0]]
        let per = Self.shape.queryHeads * Self.shape.headDim
        let queries = SyntheticKV(shape: Self.shape, seed: 9).queries(layer: 0, positions: 0..<batch.count)
        let out = try KVCache.attend(batch: batch, layer: 0, queries: queries)
        for (i, c) in batch.enumerated() {
            let own = try c.attend(layer: 0, query: Array(queries[i * per..<(i + 1) * per]))
            #expect(Array(out[i * per..<(i + 1) * per]).map(\.bitPattern) == own.map(\.bitPattern))
        }
    }

    @Test func anEmptyLayerFailsNamingTheSequence() throws {
        let full = try Self.cache(.dense, tokens: 20, seed: 4)
        let empty = try KVCache(shape: Self.shape)
        let queries = [Float](repeating: 0.5, count: 2 * Self.shape.queryHeads * Self.shape.headDim)
        #expect(throws: SparKVError.empty("attend_batch: sequence 1: attend: layer 0 holds no token")) {
            try KVCache.attend(batch: [full, empty], layer: 0, queries: queries)
        }
        #expect(throws: SparKVError.self) { try KVCache.attend(batch: [], layer: 0, queries: []) }
    }
}
