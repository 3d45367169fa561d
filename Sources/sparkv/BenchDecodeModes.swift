import Foundation
import SparKV

/// `bench decode --batch`: decode throughput of a batch of sequences at equal total memory. The
/// memory of `batch` dense f16 sequences is the budget; each policy runs as many sequences as fit
/// in it (MemoryPlan), attending all of them per layer with one `KVCache.attend(batch:)` call.
struct BenchBatchRunner {
    let options: BenchOptions
    let batches: [Int]
    let policies: [BenchPolicy]
    let layers: Int
    let steps: Int
    let warmup: Int
    let progress = BenchProgress()

    /// At most this many times the dense batch (a 0.05x-byte policy would otherwise ask for 20x).
    static let maxGrowth = 8

    func run() throws -> String {
        let contexts = try options.resolvedContexts(), threads = try options.resolvedThreads()
        let probeBytes = BenchBandwidth.bufferBytes(requestedMiB: options.resolvedProbeMiB)
        let bandwidth = try BenchBandwidth.probeAll(threads, previous: [], bytes: probeBytes, passes: options.quick ? 3 : 7,
                                                    progress: progress, label: "bench decode --batch")
        var table = [["context", "thr", "memory", "policy", "sequences", "bytes/seq", "ms/step", "tokens/s", "vs dense"]]
        for n in contexts {
            let shape = options.modelShape(layers: layers, capacity: n)
            let dense = try MemoryPlan.memory(shape: shape, policy: .dense, promptTokens: n).reservedBytes
            for t in threads {
                for b in batches {
                    let budget = b * dense
                    var denseRate: Double?
                    for p in policies {
                        let fit = min(try MemoryPlan.maxBatch(shape: shape, policy: p.policy, memoryBytes: budget,
                                                              promptTokens: n), b * Self.maxGrowth)
                        let per = try MemoryPlan.memory(shape: shape, policy: p.policy, promptTokens: n).reservedBytes
                        if let limit = BenchMemory.budget(), fit * per + 3 * shape.kvHeads * n * shape.headDim * 4 > limit {
                            progress.note("sparkv bench: skipped \(p.name) at batch \(b), context \(n): "
                                          + "\(benchBytes(fit * per)) of caches exceed 85% of MemAvailable")
                            continue
                        }
                        guard fit >= 1 else { continue }
                        let ms = try measure(policy: p, sequences: fit, shape: shape, context: n, threads: t)
                        let rate = Double(fit) / (ms / 1000)
                        if p.name == BenchPolicies.baseline { denseRate = rate }
                        table.append(["\(n)", "\(t)", benchBytes(budget), p.name, "\(fit)", benchBytes(per),
                                      String(format: "%.2f", ms), String(format: "%.1f", rate),
                                      denseRate.map { String(format: "%.2fx", rate / $0) } ?? "-"])
                    }
                }
            }
        }
        progress.clear()
        let probe = bandwidth.map { "\($0.threads) thr \(String(format: "%.1f", $0.gbps)) GB/s" }.joined(separator: ", ")
        return """
            decode throughput at equal memory (\(options.shape.rawValue), \(layers) layers; memory = the dense f16 \
            caches of the batch; each policy runs as many sequences as fit, one attend(batch:) per layer and step)
            \(textTable(table))
            tokens/s = sequences / median step time (one token per sequence per step, attention on every layer).
            bandwidth probe: \(probe); \(machineLine())
            """
    }

    private func machineLine() -> String {
        let m = BenchMachine.current()
        return "\(m.cpuModel) (\(m.logicalCPUs) CPUs)"
    }

    /// Median ms per step over `steps` steps of `sequences` caches.
    private func measure(policy p: BenchPolicy, sequences: Int, shape: ModelShape, context n: Int, threads: Int) throws -> Double {
        let data = SyntheticKV(shape: shape, seed: options.seed, ropeBase: options.shape.ropeBase)
        var caches: [KVCache] = []
        for _ in 0..<sequences {
            let c = try KVCache(shape: shape, policy: p.with(threads: threads))
            try c.setKernel(options.kernel)
            caches.append(c)
        }
        let w = min(p.policy.window, n)
        for layer in 0..<shape.layers {
            progress.update("bench decode --batch: \(p.name), \(sequences) sequences, prefilling layer \(layer + 1)/\(shape.layers)")
            let keys = data.keys(layer: layer, tokens: 0..<n), values = data.values(layer: layer, tokens: 0..<n)
            let window = data.queries(layer: layer, positions: n - w..<n)
            for c in caches {
                try c.prefill(layer: layer, keys: keys, values: values, windowQueries: window, tokenCount: n, windowCount: w)
            }
        }
        var queries: [[Float]] = []
        for layer in 0..<shape.layers {
            let q = data.queries(layer: layer, positions: n - 1..<n)
            queries.append(Array([[Float]](repeating: q, count: sequences).joined()))
        }
        var samples: [Double] = []
        for step in 0..<(warmup + steps) {
            progress.update("bench decode --batch: \(p.name), \(sequences) sequences, step \(step + 1)/\(warmup + steps)")
            let start = benchNow()
            for layer in 0..<shape.layers {
                _ = try KVCache.attend(batch: caches, layer: layer, queries: queries[layer])
            }
            if step >= warmup { samples.append(Double(benchNow() - start) / 1e6) }
        }
        return BenchStats(samples).median
    }
}

/// `bench decode --generate G`: a long generation (prompt of the first --contexts size, then G
/// appended tokens, each step appending to and attending on every layer): bytes held and decode
/// speed as the cache grows, for prefill-only compression and decode-time compression side by side.
struct BenchGenerationRunner {
    let options: BenchOptions
    let generate: Int
    let policies: [BenchPolicy]
    let layers: Int
    let steps: Int
    let progress = BenchProgress()

    static let defaultPolicies = ["dense-f16", "spark-0.8-mean", "spark(0.8,mean,signed)+decode(32)"]

    func run() throws -> String {
        let n = try options.resolvedContexts()[0], t = try options.resolvedThreads()[0]
        let shape = options.modelShape(layers: layers, capacity: n + generate)
        let probeBytes = BenchBandwidth.bufferBytes(requestedMiB: options.resolvedProbeMiB)
        let bandwidth = try BenchBandwidth.measure(bytes: probeBytes, threads: t, passes: options.quick ? 3 : 7)
        let checkpoints = [generate / 4, generate / 2, 3 * generate / 4, generate].filter { $0 > 0 }
        var header = ["policy", "bytes at end", "vs dense", "append µs/token"]
        header += checkpoints.map { "ms/step @\(n + $0)" }
        header.append("tokens/s @end")
        var table = [header]
        var denseBytes: Int?
        for p in policies {
            let row = try measure(policy: p, shape: shape, prompt: n, threads: t, checkpoints: checkpoints)
            if p.name == BenchPolicies.baseline { denseBytes = row.bytes }
            let perStep = (row.attendMs.last ?? .nan) + row.appendMicros * Double(shape.layers) / 1000
            table.append([p.name, benchBytes(row.bytes), denseBytes.map { String(format: "%.3f", Double(row.bytes) / Double($0)) } ?? "-",
                          String(format: "%.1f", row.appendMicros)] + row.attendMs.map { String(format: "%.2f", $0) }
                         + [String(format: "%.1f", 1000 / perStep)])
        }
        progress.clear()
        return """
            long generation (\(options.shape.rawValue), \(layers) layers, \(t) thread\(t == 1 ? "" : "s")): prompt \(n) \
            tokens, then \(generate) generated; each step appends one token to every layer (with its query) and attends
            \(textTable(table))
            bytes at end: memory report, reserved bytes; append µs/token: mean per layer over every append (aging \
            included); ms/step: median of \(steps) decode steps (attention on every layer) at that length.
            bandwidth probe: \(t) thr \(String(format: "%.1f", bandwidth.gbps)) GB/s
            """
    }

    struct Row { var bytes: Int; var appendMicros: Double; var attendMs: [Double] }

    private func measure(policy p: BenchPolicy, shape: ModelShape, prompt n: Int, threads: Int,
                         checkpoints: [Int]) throws -> Row {
        let data = SyntheticKV(shape: shape, seed: options.seed, ropeBase: options.shape.ropeBase)
        let cache = try KVCache(shape: shape, policy: p.with(threads: threads))
        try cache.setKernel(options.kernel)
        let w = min(p.policy.window, n)
        for layer in 0..<shape.layers {
            progress.update("bench decode --generate: \(p.name), prefilling layer \(layer + 1)/\(shape.layers)")
            try cache.prefill(layer: layer, keys: data.keys(layer: layer, tokens: 0..<n),
                              values: data.values(layer: layer, tokens: 0..<n),
                              windowQueries: data.queries(layer: layer, positions: n - w..<n), tokenCount: n, windowCount: w)
        }
        let kvRow = shape.kvHeads * shape.headDim, qRow = shape.queryHeads * shape.headDim
        var appendNs: UInt64 = 0, attendMs: [Double] = []
        var done = 0
        let chunk = 256
        for checkpoint in checkpoints {
            while done < checkpoint {
                let m = min(chunk, checkpoint - done)
                progress.update("bench decode --generate: \(p.name), token \(done)/\(generate)")
                for layer in 0..<shape.layers {
                    let range = n + done..<n + done + m
                    let k = data.keys(layer: layer, tokens: range), v = data.values(layer: layer, tokens: range)
                    let q = data.queries(layer: layer, positions: range)
                    // keys/values come [kvHeads][m][D]: one token's rows are gathered per step
                    for i in 0..<m {
                        var kt = [Float](repeating: 0, count: kvRow), vt = kt
                        for h in 0..<shape.kvHeads {
                            let src = (h * m + i) * shape.headDim, dst = h * shape.headDim
                            kt.replaceSubrange(dst..<dst + shape.headDim, with: k[src..<src + shape.headDim])
                            vt.replaceSubrange(dst..<dst + shape.headDim, with: v[src..<src + shape.headDim])
                        }
                        var qt = [Float](repeating: 0, count: qRow)
                        for h in 0..<shape.queryHeads {
                            let src = (h * m + i) * shape.headDim, dst = h * shape.headDim
                            qt.replaceSubrange(dst..<dst + shape.headDim, with: q[src..<src + shape.headDim])
                        }
                        let start = benchNow()
                        try cache.append(layer: layer, keys: kt, values: vt, query: qt)
                        appendNs += benchNow() - start
                    }
                }
                done += m
            }
            var samples: [Double] = []
            let q = (0..<shape.layers).map { data.queries(layer: $0, positions: n + done - 1..<n + done) }
            var out = [Float]()
            for _ in 0..<steps {
                let start = benchNow()
                for layer in 0..<shape.layers { try cache.attend(layer: layer, query: q[layer], into: &out) }
                samples.append(Double(benchNow() - start) / 1e6)
            }
            attendMs.append(BenchStats(samples).median)
        }
        let micros = Double(appendNs) / 1000 / Double(max(1, generate * shape.layers))
        return Row(bytes: try cache.memoryReport().reservedBytes, appendMicros: micros, attendMs: attendMs)
    }
}
