import ArgumentParser
import Foundation
import SparKV

/// `sparkv bench decode`: time of one decode step (attention on every layer) per policy.
struct BenchDecodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Decode-attention speed per policy: ms per step, GB/s, speed-up vs dense f16, % of measured bandwidth.",
        discussion: """
            For each context and thread count: one cache per policy is filled layer by layer with the same \
            SyntheticKV data (one layer of f32 data in memory at a time), then decode steps run round-robin \
            over the policies. One step appends one token to every layer (not timed) and attends on every \
            layer with one query token (timed). Reported: median/min/max ms per step over --steps steps \
            after --warmup steps, ms per layer, steps/s, bytes read per step (the cache's total used bytes \
            from memoryReport, all of which one step reads), effective GB/s (bytes / median time), speed-up \
            vs dense f16 of the same run, % of the streaming-read bandwidth the probe measures with the same \
            thread count, and the byte ceiling (dense f16 bytes / bytes: the speed-up a purely \
            bandwidth-bound kernel would reach).

            Contexts whose caches plus one layer of f32 source data do not fit in 85% of MemAvailable are \
            skipped with a message. Without --layers every context uses enough layers that the dense f16 \
            cache is about 1 GiB (far beyond the last-level cache), at most the model's layer count.

            A second table gives the single-threaded compute cost, cache-resident (one KV head, a context \
            small enough that its dense f16 K and V fit in half the L2): ns per token and KV head. On servers \
            with far less bandwidth per core than this machine, time per token approaches \
            max(compute, bytes / bandwidth per core); the last column projects the speed-up vs dense f16 \
            per stored token at --server-gbps-per-core.
            """
    )

    @OptionGroup var options: BenchOptions

    @Option(help: "Layers per cache (default: enough for ~1 GiB of dense f16 at each context, at most the model's).")
    var layers: Int?

    @Option(help: "Measured steps per policy. Default 20 (--quick: 5).")
    var steps: Int?

    @Option(help: "Warm-up steps before measuring. Default 3 (--quick: 1).")
    var warmup: Int?

    @Option(name: .customLong("policy-seconds"),
            help: "Time budget of one policy's steps per context and thread count: a slower policy stops early, after at least 3 measured steps.")
    var policySeconds: Double = 30

    @Option(name: .customLong("compute-tokens"),
            help: "Context of the single-threaded compute measurement (default: 2048, less if dense f16 K+V of one head would exceed half the L2).")
    var computeTokens: Int?

    @Flag(name: .customLong("no-compute"), help: "Skip the single-threaded compute measurement.")
    var noCompute = false

    @Option(name: .customLong("server-gbps-per-core"), help: "Bandwidth per core of the server the compute table projects to.")
    var serverGBpsPerCore: Double = 7

    @Option(help: "Batch mode: for each dense batch size, every policy runs as many sequences as fit in the dense batch's memory (one attend(batch:) per layer); reports tokens/s. E.g. 1,4,16.")
    var batch: String?

    @Option(help: "Long-generation mode: after a prompt of the first --contexts size, generate this many tokens (append with the query, then attend, every layer): bytes and speed as the cache grows. Default policies: dense, SparK 0.8 prefill-only, SparK 0.8 with decode(32).")
    var generate: Int?

    func validate() throws {
        if let layers, layers < 1 { throw ValidationError("--layers must be at least 1") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if let warmup, warmup < 0 { throw ValidationError("--warmup must not be negative") }
        if let computeTokens, computeTokens < 64 { throw ValidationError("--compute-tokens must be at least 64") }
        guard policySeconds > 0 else { throw ValidationError("--policy-seconds must be positive") }
        guard serverGBpsPerCore > 0 else { throw ValidationError("--server-gbps-per-core must be positive") }
        if let batch {
            let sizes = try benchList(batch, flag: "--batch") { Int($0) }
            guard sizes.allSatisfy({ (1...4096).contains($0) }) else { throw ValidationError("--batch sizes must be in 1...4096") }
        }
        if let generate, !(1...(1 << 24)).contains(generate) { throw ValidationError("--generate must be in 1...\(1 << 24)") }
        if batch != nil && generate != nil { throw ValidationError("--batch and --generate are separate modes: give one") }
    }

    func run() throws {
        benchWarnIfDebug()
        if let batch {
            let runner = BenchBatchRunner(
                options: options, batches: try benchList(batch, flag: "--batch") { Int($0) },
                policies: try BenchPolicies.resolve(options.policyNames() ?? ["dense-f16", "spark-0.8-mean",
                                                                                "spark(0.8,mean,signed)+kprec(i8)+vprec(i8)"]),
                layers: layers ?? 4, steps: steps ?? (options.quick ? 3 : 10), warmup: warmup ?? 1)
            print(try runner.run())
            return
        }
        if let generate {
            let runner = BenchGenerationRunner(
                options: options, generate: generate,
                policies: try BenchPolicies.resolve(options.policyNames() ?? BenchGenerationRunner.defaultPolicies),
                layers: layers ?? 4, steps: steps ?? (options.quick ? 3 : 10))
            print(try runner.run())
            return
        }
        let runner = try BenchDecodeRunner(command: self)
        let report = try runner.run()
        print(report.table())
        if let path = options.json { try benchWrite(try report.json(), to: path) }
        if let path = options.csv { try benchWrite(report.csv(), to: path) }
    }
}

/// Carries out `bench decode`.
struct BenchDecodeRunner {
    let options: BenchOptions
    let contexts: [Int]
    let threadCounts: [Int]
    let policies: [BenchPolicy]
    let steps: Int
    let warmup: Int
    let fixedLayers: Int?
    let computeTokens: Int?
    let serverGBpsPerCore: Double
    let policySeconds: Double
    let progress = BenchProgress()
    let machine = BenchMachine.current()

    /// Dense f16 bytes a default-layered cache aims at.
    static let targetDenseBytes = 1 << 30

    init(command c: BenchDecodeCommand) throws {
        options = c.options
        contexts = try c.options.resolvedContexts()
        threadCounts = try c.options.resolvedThreads()
        policies = try BenchPolicies.resolve(c.options.policyNames())
        steps = c.steps ?? (c.options.quick ? 5 : 20)
        warmup = c.warmup ?? (c.options.quick ? 1 : 3)
        fixedLayers = c.layers ?? (c.options.quick ? 2 : nil)
        serverGBpsPerCore = c.serverGBpsPerCore
        policySeconds = c.options.quick ? min(c.policySeconds, 2) : c.policySeconds
        if c.noCompute {
            computeTokens = nil
        } else if let t = c.computeTokens {
            computeTokens = t
        } else {
            // Dense f16 K and V of one KV head in half the L2 (per core), between 256 and 2048 tokens.
            let d = c.options.modelShape(capacity: 1).headDim
            let l2 = BenchDecodeRunner.l2Bytes() ?? (1 << 20)
            let fit = l2 / 2 / max(1, d * 4)
            computeTokens = min(c.options.quick ? 1024 : 2048, max(256, fit))
        }
    }

    /// Per-core L2 size from sysfs.
    static func l2Bytes() -> Int? {
        for index in 0..<8 {
            let dir = "/sys/devices/system/cpu/cpu0/cache/index\(index)"
            guard let level = try? String(contentsOfFile: dir + "/level", encoding: .utf8),
                  level.trimmingCharacters(in: .whitespacesAndNewlines) == "2",
                  let size = try? String(contentsOfFile: dir + "/size", encoding: .utf8) else { continue }
            let s = size.trimmingCharacters(in: .whitespacesAndNewlines)
            guard let n = Int(s.filter(\.isNumber)) else { continue }
            return n * (s.hasSuffix("K") ? 1024 : s.hasSuffix("M") ? 1 << 20 : 1)
        }
        return nil
    }

    func layers(context: Int) -> Int {
        if let fixedLayers { return fixedLayers }
        let shape = options.modelShape(capacity: context)
        let perLayer = max(1, context * shape.kvHeads * shape.headDim * 4)
        return min(shape.layers, max(1, (Self.targetDenseBytes + perLayer - 1) / perLayer))
    }

    func run() throws -> BenchDecodeReport {
        let started = Date()
        var report = BenchDecodeReport(
            version: KVCache.libraryVersion, machine: machine, preset: options.shape.rawValue,
            shape: options.modelShape(capacity: 1), kernel: "", steps: steps, warmup: warmup, seed: options.seed,
            threads: threadCounts, contexts: contexts,
            policies: policies.map(BenchPolicyEntry.init))

        let probeBytes = BenchBandwidth.bufferBytes(requestedMiB: options.resolvedProbeMiB)
        let passes = options.quick ? 3 : 7
        report.bandwidth = try BenchBandwidth.probeAll(threadCounts, previous: [], bytes: probeBytes, passes: passes,
                                                       progress: progress, label: "bench decode")

        let estimates = try bytesPerTokenHead()
        for context in contexts {
            for t in threadCounts {
                let (rows, kernel, skip, failures) = try measure(context: context, threads: t, estimates: estimates)
                if let skip {
                    progress.note("sparkv bench: skipped context \(context), \(t) thread(s): \(skip)")
                    report.skipped.append(BenchSkip(context: context, threads: t, reason: skip))
                    continue
                }
                for failure in failures {
                    progress.note("sparkv bench: context \(context), \(t) thread(s): dropped \(failure)")
                    report.skipped.append(BenchSkip(context: context, threads: t, reason: "dropped \(failure)"))
                }
                report.kernel = kernel
                report.rows += rows
            }
        }
        if let computeTokens {
            report.compute = try measureCompute(tokens: computeTokens, notes: &report.notes)
            report.computeTokens = computeTokens
            report.serverGBpsPerCore = serverGBpsPerCore
            if report.kernel.isEmpty { report.kernel = report.compute.first?.kernel ?? "" }
        }
        report.bandwidth = try BenchBandwidth.probeAll(threadCounts, previous: report.bandwidth, bytes: probeBytes,
                                                       passes: passes, progress: progress, label: "bench decode")
        for i in report.rows.indices {
            report.rows[i].percentOfBandwidth = report.bandwidth.first { $0.threads == report.rows[i].threads }
                .map { report.rows[i].gbps / $0.gbps * 100 }
        }
        progress.clear()
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    // MARK: Memory estimate

    /// Reserved bytes per (prompt token x KV head) of each policy, from a 1-layer, 1-KV-head cache
    /// of 2048 tokens (an over-estimate for eviction policies, whose kept count does not grow
    /// with the context; exact otherwise up to page slack).
    private func bytesPerTokenHead() throws -> [String: Double] {
        let n = 2048
        var shape = options.modelShape(capacity: n)
        shape.layers = 1
        shape.queryHeads = max(1, shape.groupSize)
        shape.kvHeads = 1
        let data = SyntheticKV(shape: shape, seed: options.seed, ropeBase: options.shape.ropeBase)
        let keys = data.keys(layer: 0, tokens: 0..<n), values = data.values(layer: 0, tokens: 0..<n)
        var out: [String: Double] = [:]
        for p in policies {
            let w = min(p.policy.window, n)
            let window = data.queries(layer: 0, positions: n - w..<n)
            let upperBound = Double(shape.headDim * (p.policy.keyPrecision.byteCount + p.policy.valuePrecision.byteCount)
                                    + shape.headDim / 2 + 16)
            do {
                let cache = try KVCache(shape: shape, policy: p.with(threads: 1))
                try cache.prefill(layer: 0, keys: keys, values: values, windowQueries: window, tokenCount: n, windowCount: w)
                out[p.name] = max(Double(try cache.memoryReport().reservedBytes) / Double(n), 1)
            } catch {
                out[p.name] = upperBound
            }
        }
        return out
    }

    // MARK: Decode

    /// One context and thread count: build every policy's cache, run the steps.
    private func measure(context n: Int, threads: Int, estimates: [String: Double])
        throws -> (rows: [BenchDecodeRow], kernel: String, skip: String?, failures: [String]) {
        let layerCount = layers(context: n)
        let totalSteps = warmup + steps
        let shape = options.modelShape(layers: layerCount, capacity: n + totalSteps)
        let kv = shape.kvHeads, nq = shape.queryHeads, d = shape.headDim

        // Memory: every cache, plus one layer of f32 K, V and window queries, plus the step data.
        let cacheBytes = policies.reduce(0.0) { $0 + (estimates[$1.name] ?? 0) * Double((n + totalSteps) * kv * layerCount) }
        let window = policies.map { min($0.policy.window, n) }.max() ?? 32
        let sourceBytes = Double(2 * kv * n * d * 4 + nq * window * d * 4 + layerCount * totalSteps * (nq + 2 * kv) * d * 4)
        let need = Int(cacheBytes * 1.05 + sourceBytes)
        if let budget = BenchMemory.budget(), need > budget {
            return ([], "", "needs about \(benchBytes(need)) (caches \(benchBytes(Int(cacheBytes))) + f32 source "
                    + "\(benchBytes(Int(sourceBytes)))) but only \(benchBytes(budget)) may be allocated "
                    + "(85% of MemAvailable); use --layers or fewer --policies", [])
        }

        let label = "ctx \(n), \(layerCount) layers, \(threads) thr"
        // A policy the library rejects for this context (e.g. an eviction budget larger than the
        // prompt) is dropped from this run with a message; the others go on.
        var caches: [KVCache?] = []
        var failures: [String] = []
        for p in policies {
            do {
                let cache = try KVCache(shape: shape, policy: p.with(threads: threads))
                try cache.setKernel(options.kernel)
                caches.append(cache)
            } catch {
                caches.append(nil)
                failures.append("\(p.name): \(error)")
            }
        }
        let data = SyntheticKV(shape: shape, seed: options.seed, ropeBase: options.shape.ropeBase)
        // Per layer: [step][heads][D] rows of the appended tokens and of the decode queries.
        var stepKeys: [[Float]] = [], stepValues: [[Float]] = [], stepQueries: [[Float]] = []
        for layer in 0..<layerCount {
            progress.update("bench decode \(label): generating layer \(layer + 1)/\(layerCount)")
            let keys = data.keys(layer: layer, tokens: 0..<n)
            let values = data.values(layer: layer, tokens: 0..<n)
            let queries = data.queries(layer: layer, positions: n - window..<n)
            for i in caches.indices {
                guard let cache = caches[i] else { continue }
                progress.update("bench decode \(label): prefill layer \(layer + 1)/\(layerCount), \(policies[i].name)")
                do {
                    try cache.prefill(layer: layer, keys: keys, values: values, windowQueries: queries,
                                      tokenCount: n, windowCount: window)
                } catch {
                    caches[i] = nil
                    failures.append("\(policies[i].name): \(error)")
                }
            }
            let future = n..<n + totalSteps
            stepKeys.append(benchTranspose(data.keys(layer: layer, tokens: future), heads: kv, count: totalSteps, headDim: d))
            stepValues.append(benchTranspose(data.values(layer: layer, tokens: future), heads: kv, count: totalSteps, headDim: d))
            stepQueries.append(benchTranspose(data.queries(layer: layer, positions: future), heads: nq, count: totalSteps, headDim: d))
        }

        // Round-robin over the policies (the starting one rotates each round), so that machine
        // noise spreads evenly over them. Each policy keeps its own step count (= tokens appended
        // since the prompt); a policy whose steps are slow stops early: warm-up after one step once
        // it has used a quarter of --policy-seconds, measuring once it has 3 steps and has used
        // all of it.
        var samples = [[Double]](repeating: [], count: caches.count)
        var bytes = [Int](repeating: 0, count: caches.count)
        var held = [Int](repeating: 0, count: caches.count)
        var warmDone = [Int](repeating: 0, count: caches.count)
        var spentWarm = [Double](repeating: 0, count: caches.count), spent = [Double](repeating: 0, count: caches.count)
        var out = [Float](repeating: 0, count: nq * d)
        let rowKV = kv * d, rowQ = nq * d
        var round = 0
        while true {
            var active = false
            for k in 0..<caches.count {
                let i = (k + round) % caches.count
                guard let cache = caches[i] else { continue }
                let warming = warmDone[i] < warmup && !(warmDone[i] >= 1 && spentWarm[i] > policySeconds / 4)
                if !warming {
                    warmDone[i] = warmup
                    if samples[i].count >= steps || (samples[i].count >= 3 && spent[i] > policySeconds) { continue }
                }
                active = true
                let stepIndex = warmDone[i] + samples[i].count  // row of this step's token and query
                progress.update("bench decode \(label): \(policies[i].name) "
                                + (warming ? "warm-up \(warmDone[i] + 1)/\(warmup)" : "step \(samples[i].count + 1)/\(steps)"))
                for layer in 0..<layerCount {
                    try stepKeys[layer].withUnsafeBufferPointer { kb in
                        try stepValues[layer].withUnsafeBufferPointer { vb in
                            try cache.append(layer: layer,
                                             keys: UnsafeBufferPointer(rebasing: kb[stepIndex * rowKV..<(stepIndex + 1) * rowKV]),
                                             values: UnsafeBufferPointer(rebasing: vb[stepIndex * rowKV..<(stepIndex + 1) * rowKV]))
                        }
                    }
                }
                if !warming && samples[i].isEmpty {
                    let m = try cache.memoryReport()
                    bytes[i] = m.totalBytes
                    held[i] = m.tokenCount / layerCount  // per layer and KV head
                }
                let elapsed = try out.withUnsafeMutableBufferPointer { o -> UInt64 in
                    let t0 = benchNow()
                    for layer in 0..<layerCount {
                        try stepQueries[layer].withUnsafeBufferPointer { qb in
                            try cache.attend(layer: layer,
                                             query: UnsafeBufferPointer(rebasing: qb[stepIndex * rowQ..<(stepIndex + 1) * rowQ]),
                                             into: o)
                        }
                    }
                    return benchNow() - t0
                }
                let seconds = Double(elapsed) / 1e9
                if warming {
                    warmDone[i] += 1
                    spentWarm[i] += seconds
                } else {
                    samples[i].append(seconds * 1e3)
                    spent[i] += seconds
                }
                if out.contains(where: { !$0.isFinite }) {
                    throw BenchError("\(policies[i].name): attention output is not finite")
                }
            }
            if !active { break }
            round += 1
        }

        let baseline = policies.indices.first { policies[$0].name == BenchPolicies.baseline && caches[$0] != nil }
        let baseMedian = baseline.map { BenchStats(samples[$0]).median }
        let baseBytes = baseline.map { bytes[$0] }
        var rows: [BenchDecodeRow] = []
        for (i, p) in policies.enumerated() {
            guard let cache = caches[i] else { continue }
            let stats = BenchStats(samples[i])
            let gbps = Double(bytes[i]) / (stats.median / 1e3) / 1e9
            rows.append(BenchDecodeRow(
                threads: cache.threadCount, context: n, layers: layerCount, policy: p.name,
                kernel: cache.kernel.name, msPerStep: stats, msPerLayer: stats.median / Double(layerCount),
                stepsPerSecond: 1e3 / stats.median, bytesPerStep: bytes[i], gbps: gbps,
                speedupVsDenseF16: baseMedian.map { $0 / stats.median },
                percentOfBandwidth: nil,  // set once the probe has run again after the measurements
                byteCeiling: baseBytes.map { Double($0) / Double(max(1, bytes[i])) },
                tokensHeldPerLayer: held[i]))
        }
        return (rows, rows.first?.kernel ?? "", nil, failures)
    }

    // MARK: Compute

    /// Single-threaded, cache-resident cost per token and KV head of each policy. Samples of ~2 ms
    /// (repeated attends on one cache) are taken round-robin over the policies, 21 per policy;
    /// the ratios use the minimum, the least disturbed sample of a compute-bound loop.
    private func measureCompute(tokens n: Int, notes: inout [String]) throws -> [BenchComputeRow] {
        var shape = options.modelShape(capacity: n + 1)
        shape.layers = 1
        shape.queryHeads = max(1, shape.groupSize)
        shape.kvHeads = 1
        let d = shape.headDim
        let data = SyntheticKV(shape: shape, seed: options.seed, ropeBase: options.shape.ropeBase)
        let keys = data.keys(layer: 0, tokens: 0..<n), values = data.values(layer: 0, tokens: 0..<n)
        let query = data.queries(layer: 0, positions: n..<n + 1)
        var out = [Float](repeating: 0, count: shape.queryHeads * d)

        var entries: [(policy: BenchPolicy, cache: KVCache, memory: MemoryReport, reps: Int)] = []
        for (index, p) in policies.enumerated() {
            progress.update("bench decode: single-threaded compute, preparing \(p.name) (\(index + 1)/\(policies.count))")
            let w = min(p.policy.window, n)
            do {
                let cache = try KVCache(shape: shape, policy: p.with(threads: 1))
                try cache.setKernel(options.kernel)
                try cache.prefill(layer: 0, keys: keys, values: values,
                                  windowQueries: data.queries(layer: 0, positions: n - w..<n), tokenCount: n, windowCount: w)
                // Calibrate: enough attends per sample for ~2 ms.
                var reps = 1
                while true {
                    let t0 = benchNow()
                    for _ in 0..<reps { try cache.attend(layer: 0, query: query, into: &out) }
                    if benchNow() - t0 >= 2_000_000 || reps >= 1 << 20 { break }
                    reps *= 2
                }
                entries.append((p, cache, try cache.memoryReport(), reps))
            } catch {
                notes.append("compute table: dropped \(p.name) at \(n) tokens: \(error)")
                progress.note("sparkv bench: compute table: dropped \(p.name) at \(n) tokens: \(error)")
            }
        }
        let sampleCount = options.quick ? 7 : 21
        var perToken = [[Double]](repeating: [], count: entries.count)
        for sample in 0..<sampleCount {
            progress.update("bench decode: single-threaded compute, sample \(sample + 1)/\(sampleCount)")
            for k in entries.indices {
                let i = (k + sample) % entries.count
                let e = entries[i]
                let t0 = benchNow()
                for _ in 0..<e.reps { try e.cache.attend(layer: 0, query: query, into: &out) }
                perToken[i].append(Double(benchNow() - t0) / Double(e.reps) / Double(max(1, e.memory.tokenCount)))
            }
        }
        var rows = entries.enumerated().map { i, e in
            BenchComputeRow(
                policy: e.policy.name, kernel: e.cache.kernel.name, tokens: n, tokensHeld: e.memory.tokenCount, kvHeads: 1,
                queryHeads: shape.queryHeads, nsPerTokenHead: BenchStats(perToken[i]),
                bytesPerTokenHead: Double(e.memory.totalBytes) / Double(max(1, e.memory.tokenCount)))
        }
        if let base = rows.first(where: { $0.policy == BenchPolicies.baseline }) {
            func projected(_ r: BenchComputeRow) -> Double {
                max(r.nsPerTokenHead.min, r.bytesPerTokenHead / serverGBpsPerCore)
            }
            for i in rows.indices {
                rows[i].relativeToDenseF16 = base.nsPerTokenHead.min / rows[i].nsPerTokenHead.min
                rows[i].projectedSpeedup = projected(base) / projected(rows[i])
            }
        }
        return rows
    }
}
