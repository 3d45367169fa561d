// DecodeCompressionTests.swift — appended tokens compressed as they age, from Swift.

import Foundation
import SparKV
import Testing

@Suite struct DecodeCompressionTests {
    static let shape = ModelShape(layers: 1, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 1000)

    @Test func decodeCompressionRoundTripsThroughEveryForm() throws {
        var policy = CompressionPolicy.spark(ratio: 0.8)
        policy.decodeCompression = .init(recent: 64)
        #expect(policy.description == "spark(0.8,mean,signed)+decode(64)")
        #expect(try CompressionPolicy(parsing: "spark:0.8+decode(64)") == policy)
        #expect(try CompressionPolicy(parsing: "spark:0.8+decode").decodeCompression == .init(recent: 32))
        #expect(try CompressionPolicy(cPolicy: policy.cPolicy()) == policy)
        let json = try JSONEncoder().encode(policy)
        #expect(try JSONDecoder().decode(CompressionPolicy.self, from: json) == policy)
    }

    @Test func agedTokensShrinkTheCacheAsPlanned() throws {
        var policy = CompressionPolicy.spark(ratio: 0.8)
        policy.window = 16
        policy.decodeCompression = .init(recent: 32)
        let data = SyntheticKV(shape: Self.shape, seed: 21)
        let prompt = 200, appended = 700
        let cache = try KVCache(shape: Self.shape, policy: policy)
        try cache.prefill(layer: 0, keys: data.keys(layer: 0, tokens: 0..<prompt), values: data.values(layer: 0, tokens: 0..<prompt),
                          windowQueries: data.queries(layer: 0, positions: prompt - 16..<prompt), tokenCount: prompt,
                          windowCount: 16)
        for t in prompt..<prompt + appended {
            try cache.append(layer: 0, keys: data.keys(layer: 0, tokens: t..<t + 1), values: data.values(layer: 0, tokens: t..<t + 1),
                             query: data.queries(layer: 0, positions: t..<t + 1))
        }
        let report = try cache.memoryReport()
        #expect(report == (try MemoryPlan.memory(shape: Self.shape, policy: policy, promptTokens: prompt,
                                                 appendedTokens: appended)))
        var off = policy
        off.decodeCompression = nil
        #expect(report.totalBytes < (try MemoryPlan.memory(shape: Self.shape, policy: off, promptTokens: prompt,
                                                           appendedTokens: appended)).totalBytes)
        // two full pages of appended tokens aged (700 - 32 >= 512): 13 of 64 channels kept
        #expect(try cache.keptMask(layer: 0, kvHead: 1, token: prompt + 300).filter { $0 }.count == 13)
        #expect(try cache.keptMask(layer: 0, kvHead: 1, token: prompt + appended - 1).allSatisfy { $0 })
    }
}
