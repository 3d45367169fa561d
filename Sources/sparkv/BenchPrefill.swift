import ArgumentParser
import Foundation
import SparKV

/// `sparkv bench prefill`: compression cost of one layer per policy and context.
struct BenchPrefillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prefill",
        abstract: "Prefill (compression) cost of one layer per policy: ms, GB/s of f32 keys processed, % of measured bandwidth.",
        discussion: """
            For each context, one layer of SyntheticKV keys, values and window queries is generated once; \
            for each thread count and policy, --repetitions fresh 1-layer caches are prefilled with it and \
            each prefill call is timed (it includes window query norms, saliency, channel selection, packing, \
            statistics, and eviction scoring when the policy evicts). Reported: median/min/max ms, GB/s of \
            input keys (kvHeads x context x D x 4 bytes / median time) and that as % of the streaming-read \
            bandwidth the probe measures with the same thread count.
            """
    )

    @OptionGroup var options: BenchOptions

    @Option(help: "Timed prefills per policy, context and thread count. Default 5 (--quick: 3).")
    var repetitions: Int?

    func validate() throws {
        if let repetitions, repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
    }

    func run() throws {
        benchWarnIfDebug()
        let started = Date()
        let progress = BenchProgress()
        let contexts = try options.resolvedContexts()
        let threadCounts = try options.resolvedThreads()
        let policies = try BenchPolicies.resolve(options.policyNames())
        let reps = repetitions ?? (options.quick ? 3 : 5)
        var report = BenchPrefillReport(
            version: KVCache.libraryVersion, machine: BenchMachine.current(), preset: options.shape.rawValue,
            shape: options.modelShape(capacity: 1), kernel: "", repetitions: reps, seed: options.seed,
            threads: threadCounts, contexts: contexts,
            policies: policies.map(BenchPolicyEntry.init))

        let probeBytes = BenchBandwidth.bufferBytes(requestedMiB: options.resolvedProbeMiB)
        let passes = options.quick ? 3 : 7
        report.bandwidth = try BenchBandwidth.probeAll(threadCounts, previous: [], bytes: probeBytes, passes: passes,
                                                       progress: progress, label: "bench prefill")

        for n in contexts {
            var shape = options.modelShape(layers: 1, capacity: n)
            shape.layers = 1
            let kv = shape.kvHeads, d = shape.headDim
            let window = policies.map { min($0.policy.window, n) }.max() ?? 32
            // f32 K, V and window queries, plus the largest cache (f32 dense: 8 bytes per channel).
            let need = 2 * kv * n * d * 4 + shape.queryHeads * window * d * 4 + kv * n * (d * 8 + d / 2 + 16)
            if let budget = BenchMemory.budget(), need > budget {
                let reason = "needs about \(benchBytes(need)) but only \(benchBytes(budget)) may be allocated (85% of MemAvailable)"
                progress.note("sparkv bench: skipped context \(n): \(reason)")
                report.skipped.append(BenchSkip(context: n, threads: 0, reason: reason))
                continue
            }
            progress.update("bench prefill: context \(n): generating data")
            let data = SyntheticKV(shape: shape, seed: options.seed, ropeBase: options.shape.ropeBase)
            let keys = data.keys(layer: 0, tokens: 0..<n), values = data.values(layer: 0, tokens: 0..<n)
            let queries = data.queries(layer: 0, positions: n - window..<n)
            let keyBytes = kv * n * d * 4
            for t in threadCounts {
                for p in policies {
                    var samples: [Double] = []
                    var held = 0, stored = 0
                    for rep in 0..<reps {
                        progress.update("bench prefill: context \(n), \(t) thread\(t == 1 ? "" : "s"), \(p.name) \(rep + 1)/\(reps)")
                        let cache = try KVCache(shape: shape, policy: p.with(threads: t))
                        try cache.setKernel(options.kernel)
                        report.kernel = cache.kernel.name
                        let elapsed = try keys.withUnsafeBufferPointer { k in
                            try values.withUnsafeBufferPointer { v in
                                try queries.withUnsafeBufferPointer { q in
                                    let t0 = benchNow()
                                    try cache.prefill(layer: 0, keys: k, values: v, windowQueries: q, tokenCount: n,
                                                      windowCount: window)
                                    return benchNow() - t0
                                }
                            }
                        }
                        samples.append(Double(elapsed) / 1e6)
                        if rep == 0 {
                            let m = try cache.memoryReport()
                            held = m.tokenCount
                            stored = m.totalBytes
                        }
                    }
                    let stats = BenchStats(samples)
                    let gbps = Double(keyBytes) / (stats.median / 1e3) / 1e9
                    report.rows.append(BenchPrefillRow(
                        threads: t, context: n, policy: p.name, ms: stats, keyBytes: keyBytes, gbps: gbps,
                        percentOfBandwidth: nil, tokensHeld: held, storedBytes: stored))
                }
            }
        }
        report.bandwidth = try BenchBandwidth.probeAll(threadCounts, previous: report.bandwidth, bytes: probeBytes,
                                                       passes: passes, progress: progress, label: "bench prefill")
        for i in report.rows.indices {
            report.rows[i].percentOfBandwidth = report.bandwidth.first { $0.threads == report.rows[i].threads }
                .map { report.rows[i].gbps / $0.gbps * 100 }
        }
        progress.clear()
        report.seconds = Date().timeIntervalSince(started)
        print(report.table())
        if let path = options.json { try benchWrite(try report.json(), to: path) }
        if let path = options.csv { try benchWrite(report.csv(), to: path) }
    }
}
