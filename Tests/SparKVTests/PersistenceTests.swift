// PersistenceTests.swift — KVCache.save(to:) / savedData / init(contentsOf:) / init(savedData:):
// round trips are bit-identical (memory report, attend, appends) and malformed files throw typed errors.

import Foundation
@testable import SparKV
import Testing

@Suite("Saved caches")
struct PersistenceTests {
    private static let shape = ModelShape(layers: 2, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 1024)

    private static func filled(_ policy: CompressionPolicy, prompt: Int = 300, appended: Int = 3) throws -> KVCache {
        let cache = try KVCache(shape: shape, policy: policy)
        let data = SyntheticKV(shape: shape, seed: 7)
        for layer in 0..<shape.layers {
            try cache.prefill(layer: layer, keys: data.keys(layer: layer, tokens: 0..<prompt),
                              values: data.values(layer: layer, tokens: 0..<prompt),
                              windowQueries: data.queries(layer: layer, positions: (prompt - 16)..<prompt),
                              tokenCount: prompt, windowCount: 16)
            for t in prompt..<(prompt + appended) {
                try cache.append(layer: layer, keys: data.keys(layer: layer, tokens: t..<(t + 1)),
                                 values: data.values(layer: layer, tokens: t..<(t + 1)))
            }
        }
        return cache
    }

    private static func expectSame(_ a: KVCache, _ b: KVCache, layers: [Int]) throws {
        let data = SyntheticKV(shape: shape, seed: 9)
        for layer in layers {
            #expect(try a.memoryReport(layer: layer) == b.memoryReport(layer: layer))
            let q = data.queries(layer: layer, positions: 900..<901)
            let oa = try a.attend(layer: layer, query: q), ob = try b.attend(layer: layer, query: q)
            #expect(oa.map(\.bitPattern) == ob.map(\.bitPattern), "layer \(layer)")
        }
    }

    @Test("save then load gives a bit-identical cache that appends identically",
          arguments: [CompressionPolicy.dense, .spark(ratio: 0.75)])
    func roundTripIsBitIdentical(policy: CompressionPolicy) throws {
        let a = try Self.filled(policy)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sparkv-\(UUID().uuidString).svc").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try a.save(to: path)
        let b = try KVCache(contentsOf: path, expectedShape: Self.shape)
        #expect(b.shape == a.shape)
        try Self.expectSame(a, b, layers: [0, 1])
        let data = SyntheticKV(shape: Self.shape, seed: 3)
        for cache in [a, b] {
            try cache.append(layer: 0, keys: data.keys(layer: 0, tokens: 0..<1), values: data.values(layer: 0, tokens: 0..<1))
        }
        try Self.expectSame(a, b, layers: [0])
        #expect(try b.savedData() == a.savedData())
    }

    @Test("a layer range loads with the other layers empty")
    func layerRangeLoadsOtherLayersEmpty() throws {
        let a = try Self.filled(.spark(ratio: 0.5))
        let b = try KVCache(savedData: a.savedData(layers: 1..<2))
        #expect(try b.tokenCount(layer: 0) == 0)
        #expect(try b.tokenCount(layer: 1) == a.tokenCount(layer: 1))
        try Self.expectSame(a, b, layers: [1])
        #expect(throws: SparKVError.self) { try a.savedData(layers: 1..<3) }
    }

    @Test("malformed files throw .format, missing files .io, another model's shape .invalidShape")
    func malformedFilesThrowTypedErrors() throws {
        let data = try Self.filled(.spark(ratio: 0.5), prompt: 20, appended: 1).savedData()
        func kind(_ body: () throws -> Void) -> Int32? {
            do { try body(); return nil } catch let e as SparKVError { return e.status } catch { return -1 }
        }
        #expect(kind { _ = try KVCache(savedData: data.prefix(data.count - 1)) } == 19)
        #expect(kind { _ = try KVCache(savedData: Data()) } == 19)
        var flipped = data
        flipped[data.count / 2] ^= 0x40
        #expect(kind { _ = try KVCache(savedData: flipped) } == 19)
        #expect(kind { _ = try KVCache(contentsOf: "/nonexistent/x.svc") } == 20)
        let other = ModelShape(layers: 2, queryHeads: 4, kvHeads: 1, headDim: 64, capacity: 1024)
        #expect(kind { _ = try KVCache(savedData: data, expectedShape: other) } == 2)
        let short = ModelShape(layers: 2, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 8)
        #expect(kind { _ = try KVCache(savedData: data, expectedShape: short) } == 8)
    }
}
