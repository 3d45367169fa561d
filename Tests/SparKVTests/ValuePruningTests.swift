// ValuePruningTests.swift — value-channel pruning against PolicyRef: stored values (largest |v|
// kept in the value precision, the rest replaced by the fp16 mean of the pruned values) and the
// attention output over them.

import Testing

@testable import SparKV

struct ValueCase: Sendable, CustomStringConvertible {
    var ratio: Float
    var D: Int
    var precision: CompressionPolicy.Precision
    var description: String { "r_v=\(ratio) D=\(D) V=\(precision)" }
}

@Suite("Value pruning")
struct ValuePruningTests {
    static let cases: [ValueCase] = [
        ValueCase(ratio: 0.5, D: 64, precision: .f16),
        ValueCase(ratio: 0.25, D: 32, precision: .f32),
        ValueCase(ratio: 0.9, D: 40, precision: .bf16),
        ValueCase(ratio: 0.99, D: 16, precision: .f16),
        ValueCase(ratio: 0.1, D: 128, precision: .f16),
    ]

    @Test("each token keeps its largest |v| and stores the fp16 mean of the others", arguments: cases)
    func storedValuesMatchTheReference(_ tc: ValueCase) throws {
        var policy = CompressionPolicy.dense.withValuePruning(ratio: tc.ratio)
        policy.valuePrecision = tc.precision
        let n = 40, nKV = 2
        let run = try PolicyRun(policy, nQ: 4, nKV: nKV, D: tc.D, n: n, nWindow: 0, seed: 14, appends: 1)
        let keep = tc.D - Int((Double(tc.ratio) * Double(tc.D)).rounded(.down))
        #expect(policy.keptValueChannels(headDim: tc.D) == keep)
        var failures: [String] = []
        var keys: [[Float]] = [], values: [[Float]] = []
        for head in 0..<nKV {
            var headValues: [Float] = []
            for t in 0..<n {
                let want = PolicyRef.prunedValue(PolicyRef.valueRow(run.prompts[0], head: head, token: t), keep: keep,
                                                 precision: run.config.valuePrecision)
                let got = try run.cache.value(layer: 0, kvHead: head, token: t)
                if !Compare.bitwiseEqual(got, want) { failures.append("head \(head) token \(t): \(got) vs \(want)") }
                headValues += want
            }
            // Appended values are dense.
            let appended = run.appended[0][0].values[(head * tc.D)..<((head + 1) * tc.D)]
                .map { run.config.valuePrecision.round($0) }
            #expect(try run.cache.value(layer: 0, kvHead: head, token: n) == appended)
            headValues += appended
            keys.append(run.denseRows(head: head, tokens: Array(0..<n)).keys)
            values.append(headValues)
        }
        #expect(failures.isEmpty, "\(failures.count) tokens differ; first: \(failures.prefix(2))")
        let error = try run.attentionError(keys: keys, values: values, queries: 2)
        #expect(error <= 1e-5, "relative attention error \(error)")
    }

    @Test("magnitude ties go to the lower channel index")
    func tiesGoToTheLowerChannel() throws {
        // Values in {0, ±1, ±2}: many equal magnitudes around the cut.
        let D = 16, n = 12
        var rng = TestRNG(seed: 5)
        let values = (0..<(n * D)).map { _ in Float(rng.int(-2..<3)) }
        var keys = rng.normals(n * D)
        keys[0] = 1
        let cache = try KVCache(shape: ModelShape(layers: 1, queryHeads: 1, kvHeads: 1, headDim: D, capacity: n),
                                policy: CompressionPolicy.dense.withValuePruning(ratio: 0.5))
        try cache.prefill(layer: 0, keys: keys, values: values, tokenCount: n)
        var tiedCuts = 0
        for t in 0..<n {
            let row = values[(t * D)..<((t + 1) * D)]
            let magnitudes = row.map { abs($0) }.sorted(by: >)
            if magnitudes.filter({ $0 == magnitudes[7] }).count > 1 && magnitudes[8] == magnitudes[7] { tiedCuts += 1 }
            #expect(try cache.value(layer: 0, kvHead: 0, token: t) == PolicyRef.prunedValue(row, keep: 8, precision: .f16),
                    "token \(t): \(Array(row))")
        }
        #expect(tiedCuts > n / 2)
    }

    @Test("value pruning composes with SparK keys: attention uses recovered keys and pruned values")
    func valuePruningWithSparKAttention() throws {
        var policy = CompressionPolicy.spark(ratio: 0.75).withValuePruning(ratio: 0.5)
        policy.window = 8
        let run = try PolicyRun(policy, nQ: 4, nKV: 2, D: 32, n: 50, nWindow: 8, kind: .outlier, seed: 6, appends: 1)
        let ref = RefLayer(config: run.config, layer: 0, prompt: run.prompts[0])   // SparK keys as attention sees them
        var keys: [[Float]] = [], values: [[Float]] = []
        for head in 0..<2 {
            var headValues: [Float] = []
            for t in 0..<50 {
                headValues += PolicyRef.prunedValue(PolicyRef.valueRow(run.prompts[0], head: head, token: t), keep: 16,
                                                    precision: .f16)
            }
            let dense = run.denseRows(head: head, tokens: [])   // the appended token only
            keys.append(ref.keys[head] + dense.keys)
            values.append(headValues + dense.values)
        }
        let error = try run.attentionError(keys: keys, values: values, queries: 2, queryScale: 0.01)
        #expect(error <= 1e-5, "relative attention error \(error)")
    }
}
