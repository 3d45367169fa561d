// MemoryPlanTests.swift — the planner against caches really built, and its searches.

import SparKV
import Testing

@Suite struct MemoryPlanTests {
    static let shape = ModelShape(layers: 2, queryHeads: 4, kvHeads: 2, headDim: 64, capacity: 1000)

    @Test(arguments: [CompressionPolicy.dense, .spark(ratio: 0.8), .snapSpark(budget: 100, ratio: 0.5),
                      .think(ratio: 0.5).withPrecision(values: .i4), .streamingLLM(sinks: 4, recent: 60)])
    func plannedMemoryEqualsTheReportOfABuiltCache(policy: CompressionPolicy) throws {
        let data = SyntheticKV(shape: Self.shape, seed: 5)
        for (prompt, appended) in [(300, 0), (256, 7), (513, 200)] {
            let cache = try KVCache(shape: Self.shape, policy: policy)
            for layer in 0..<Self.shape.layers {
                try cache.prefill(layer: layer, keys: data.keys(layer: layer, tokens: 0..<prompt),
                                  values: data.values(layer: layer, tokens: 0..<prompt),
                                  windowQueries: data.queries(layer: layer, positions: prompt - 32..<prompt),
                                  tokenCount: prompt, windowCount: 32)
                for t in prompt..<prompt + appended {
                    try cache.append(layer: layer, keys: data.keys(layer: layer, tokens: t..<t + 1),
                                     values: data.values(layer: layer, tokens: t..<t + 1))
                }
            }
            let planned = try MemoryPlan.memory(shape: Self.shape, policy: policy, promptTokens: prompt,
                                                appendedTokens: appended)
            #expect(planned == (try cache.memoryReport()), "\(policy), prompt \(prompt), appended \(appended)")
        }
    }

    @Test func searchesReturnTheLastSizeThatFits() throws {
        let policy = CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8, values: .i8)
        let budget = 600_000
        let n = try MemoryPlan.maxPromptTokens(shape: Self.shape, policy: policy, memoryBytes: budget, batch: 3)
        #expect(n > 0)
        #expect(3 * (try MemoryPlan.memory(shape: Self.shape, policy: policy, promptTokens: n)).reservedBytes <= budget)
        #expect(3 * (try MemoryPlan.memory(shape: Self.shape, policy: policy, promptTokens: n + 1)).reservedBytes > budget)
        let batch = try MemoryPlan.maxBatch(shape: Self.shape, policy: policy, memoryBytes: budget, promptTokens: 400)
        let per = try MemoryPlan.memory(shape: Self.shape, policy: policy, promptTokens: 400).reservedBytes
        #expect(batch * per <= budget && (batch + 1) * per > budget)
    }

    @Test func llamaCppLayoutsCountWholeBlocks() {
        // 2 KV heads x 64 = 128 values per row: 4 blocks; K and V; 2 layers
        #expect(MemoryPlan.llamaCppBytes(shape: Self.shape, type: .q8_0, tokens: 10) == 4 * 34 * 2 * 2 * 10)
        #expect(MemoryPlan.llamaCppBytes(shape: Self.shape, type: .q4_0, tokens: 10) == 4 * 18 * 2 * 2 * 10)
        #expect(MemoryPlan.llamaCppBytes(shape: Self.shape, type: .f16, tokens: 10) == 128 * 2 * 2 * 2 * 10)
        #expect(MemoryPlan.llamaCppMaxTokens(shape: Self.shape, type: .f16, memoryBytes: 1024 * 10) == 10)
    }

    @Test func plannerErrorsAreTyped() {
        #expect(throws: SparKVError.self) {
            try MemoryPlan.memory(shape: Self.shape, policy: .dense, promptTokens: 1000, appendedTokens: 1)
        }
        #expect(throws: SparKVError.invalidShape("plan: promptTokens is -1; it must not be negative")) {
            try MemoryPlan.memory(shape: Self.shape, policy: .dense, promptTokens: -1)
        }
        #expect(throws: SparKVError.self) {
            try MemoryPlan.maxPromptTokens(shape: Self.shape, policy: .dense, memoryBytes: 1000, batch: 0)
        }
    }
}
