import Foundation
import SparKV

// Results of `sparkv bench`: Codable for --json, flattened for --csv, and the stdout tables.

struct BenchPolicyEntry: Codable {
    var name: String
    /// The compact form (CompressionPolicy.description).
    var spec: String
    var policy: CompressionPolicy

    init(_ p: BenchPolicy) {
        name = p.name
        spec = p.policy.description
        policy = p.policy
    }
}

struct BenchSkip: Codable {
    var context: Int
    var threads: Int
    var reason: String
}

/// One policy at one context and thread count.
struct BenchDecodeRow: Codable {
    var threads: Int
    var context: Int
    var layers: Int
    var policy: String
    var kernel: String
    /// Milliseconds per step (attend on every layer), over the measured steps.
    var msPerStep: BenchStats
    var msPerLayer: Double
    var stepsPerSecond: Double
    /// The cache's total used bytes (memoryReport().totalBytes), all read once per step.
    var bytesPerStep: Int
    /// bytesPerStep / median step time.
    var gbps: Double
    /// Median step time of dense f16 / this policy's, same context and threads.
    var speedupVsDenseF16: Double?
    /// gbps / the probe's GB/s with the same thread count.
    var percentOfBandwidth: Double?
    /// Dense f16 bytes / these bytes.
    var byteCeiling: Double?
    /// Tokens held per layer and KV head (fewer than the context under eviction).
    var tokensHeldPerLayer: Int

    enum CodingKeys: String, CodingKey {
        case threads, context, layers, policy, kernel, gbps
        case msPerStep = "ms_per_step", msPerLayer = "ms_per_layer", stepsPerSecond = "steps_per_s"
        case bytesPerStep = "bytes_per_step", speedupVsDenseF16 = "speedup_vs_dense_f16"
        case percentOfBandwidth = "percent_of_bandwidth", byteCeiling = "byte_ceiling"
        case tokensHeldPerLayer = "tokens_held_per_layer"
    }
}

/// Single-threaded, cache-resident attention cost of one policy.
struct BenchComputeRow: Codable {
    var policy: String
    var kernel: String
    var tokens: Int
    var tokensHeld: Int
    var kvHeads: Int
    var queryHeads: Int
    /// Nanoseconds per held token and KV head (one query token, all query heads of the group).
    var nsPerTokenHead: BenchStats
    /// Used bytes per held token and KV head (per-head metadata included).
    var bytesPerTokenHead: Double
    /// Dense f16 ns / this ns.
    var relativeToDenseF16: Double?
    /// Speed-up vs dense f16 per held token when time = max(compute, bytes / server bandwidth per core).
    var projectedSpeedup: Double?

    enum CodingKeys: String, CodingKey {
        case policy, kernel, tokens
        case tokensHeld = "tokens_held", kvHeads = "kv_heads", queryHeads = "query_heads"
        case nsPerTokenHead = "ns_per_token_head", bytesPerTokenHead = "bytes_per_token_head"
        case relativeToDenseF16 = "speedup_vs_dense_f16", projectedSpeedup = "projected_speedup"
    }
}

struct BenchDecodeReport: Codable {
    var command = "decode"
    var version: String
    var machine: BenchMachine
    var preset: String
    var shape: ModelShape
    var kernel: String
    var steps: Int
    var warmup: Int
    var seed: UInt64
    var threads: [Int]
    var contexts: [Int]
    var policies: [BenchPolicyEntry]
    var bandwidth: [BenchBandwidth] = []
    var rows: [BenchDecodeRow] = []
    var skipped: [BenchSkip] = []
    var computeTokens: Int?
    var serverGBpsPerCore: Double?
    var compute: [BenchComputeRow] = []
    var notes: [String] = []
    var seconds: Double = 0
    var bytesPerStepMeaning = "the cache's total used bytes (memoryReport().totalBytes); one step reads all of them"

    enum CodingKeys: String, CodingKey {
        case command, version, machine, preset, shape, kernel, steps, warmup, seed, threads, contexts, policies
        case bandwidth, rows, skipped
        case computeTokens = "compute_tokens", serverGBpsPerCore = "server_gbps_per_core", compute, notes, seconds
        case bytesPerStepMeaning = "bytes_per_step_meaning"
    }

    func json() throws -> String { try benchJSON(self) }

    func table() -> String {
        var lines: [String] = []
        lines.append("SparKV \(version) bench decode: synthetic \(preset) shape (query heads \(shape.queryHeads), "
                     + "KV heads \(shape.kvHeads), D \(shape.headDim)), seed \(seed)")
        lines.append(machine.summary)
        if benchIsDebugBuild { lines.append("WARNING: debug build; timings are not representative") }
        lines.append("kernel: \(kernel); threads swept: \(threads.map(String.init).joined(separator: ", "))")
        lines.append("one step = append one token to every layer (not timed) + attend on every layer with one query (timed); "
                     + "\(steps) measured steps after \(warmup) warm-up, round-robin over the policies "
                     + "(n = steps measured: a policy slower than its time budget stops after at least 3)")
        lines.append("bytes/step = the cache's total used bytes (memoryReport().totalBytes), all read once per step; "
                     + "GB/s = bytes / median step time")
        lines.append(benchBandwidthLine(bandwidth))

        var groups: [(Int, Int)] = []
        for r in rows where !groups.contains(where: { $0 == (r.context, r.threads) }) { groups.append((r.context, r.threads)) }
        for (context, t) in groups {
            let group = rows.filter { $0.context == context && $0.threads == t }
            guard let first = group.first else { continue }
            let denseF16 = group.first { $0.policy == BenchPolicies.baseline }
            lines.append("")
            lines.append("context \(context), \(first.layers) layer\(first.layers == 1 ? "" : "s")"
                         + (denseF16.map { " (dense f16 \(benchBytes($0.bytesPerStep)))" } ?? "")
                         + ", \(t) thread\(t == 1 ? "" : "s"), kernel \(first.kernel)")
            var cells = [["policy", "ms/step", "min", "max", "n", "ms/layer", "steps/s", "MiB/step", "GB/s", "% bw",
                          "x dense-f16", "byte ceiling", "tokens held"]]
            for r in group {
                cells.append([
                    r.policy, f2(r.msPerStep.median), f2(r.msPerStep.min), f2(r.msPerStep.max), String(r.msPerStep.count),
                    f3(r.msPerLayer),
                    f1(r.stepsPerSecond), f1(Double(r.bytesPerStep) / Double(1 << 20)), f1(r.gbps),
                    r.percentOfBandwidth.map { f1($0) } ?? "-", r.speedupVsDenseF16.map { f2($0) + "x" } ?? "-",
                    r.byteCeiling.map { f2($0) + "x" } ?? "-", String(r.tokensHeldPerLayer),
                ])
            }
            lines.append(textTable(cells))
        }
        for s in skipped { lines.append("\nskipped: context \(s.context), \(s.threads) thread(s): \(s.reason)") }

        if !compute.isEmpty, let first = compute.first {
            lines.append("")
            lines.append("single-threaded compute, cache-resident: 1 layer, \(first.kvHeads) KV head (\(first.queryHeads) query heads), "
                         + "\(first.tokens) tokens, 1 thread, kernel \(first.kernel); ns per held token and KV head over "
                         + "\(first.nsPerTokenHead.count) samples; ratios use the min (least disturbed sample)")
            let bw = serverGBpsPerCore ?? 0
            var cells = [["policy", "min ns/token/head", "median", "max", "x dense-f16", "B/token/head",
                          "proj. x @\(f1(bw)) GB/s/core", "tokens held"]]
            for r in compute {
                cells.append([
                    r.policy, f2(r.nsPerTokenHead.min), f2(r.nsPerTokenHead.median), f2(r.nsPerTokenHead.max),
                    r.relativeToDenseF16.map { f2($0) + "x" } ?? "-", f1(r.bytesPerTokenHead),
                    r.projectedSpeedup.map { f2($0) + "x" } ?? "-", String(r.tokensHeld),
                ])
            }
            lines.append(textTable(cells))
            for note in notes { lines.append(note) }
            lines.append("proj. = speed-up per held token if time per token were max(min compute ns, bytes / \(f1(bw)) GB/s), "
                         + "as on a server with that bandwidth per core")
            lines.append(contentsOf: boundTable())
        }
        lines.append("")
        lines.append(String(format: "total time %.1f s", seconds))
        return lines.joined(separator: "\n")
    }

    /// What bounds each measured row, from this run's own numbers: the compute estimate is the
    /// single-threaded cache-resident ns per held token and KV head times the tokens and heads of a
    /// step, divided by the threads (perfect scaling); the bytes estimate is the step's bytes over the
    /// probe's bandwidth with the same thread count. The larger one is the bound; "of bound" is that
    /// estimate over the measured median (100% = the kernel runs at its bound).
    func boundTable() -> [String] {
        var cells = [["context", "threads", "policy", "compute ms", "bytes ms", "bound", "measured ms", "of bound"]]
        for r in rows {
            guard let c = compute.first(where: { $0.policy == r.policy }),
                  let bw = bandwidth.first(where: { $0.threads == r.threads }), bw.gbps > 0 else { continue }
            let tokenHeads: Double = Double(r.tokensHeldPerLayer) * Double(shape.kvHeads) * Double(r.layers)
            let computeMs: Double = c.nsPerTokenHead.min * tokenHeads / Double(r.threads) / 1e6
            let bytesMs = Double(r.bytesPerStep) / (bw.gbps * 1e9) * 1e3
            let bound = max(computeMs, bytesMs)
            cells.append([String(r.context), String(r.threads), r.policy, f2(computeMs), f2(bytesMs),
                          computeMs >= bytesMs ? "compute" : "bytes", f2(r.msPerStep.median),
                          f1(100 * bound / r.msPerStep.median) + "%"])
        }
        guard cells.count > 1 else { return [] }
        return ["", "what bounds each policy (compute = min compute ns x held tokens x KV heads x layers / threads; "
                + "bytes = bytes/step / probe GB/s at that thread count; of bound = max of the two / measured)",
                textTable(cells)]
    }

    func csv() -> String {
        var out = [BenchCSV.header]
        for b in bandwidth {
            out.append(BenchCSV.row(["bandwidth", "\(b.threads)", "", "", "probe-\(b.simd)\(b.prefetchUsed ? "-prefetch" : "")",
                                     "", "", "", "", "", "", "", f4(b.gbps)]))
        }
        for r in rows {
            out.append(BenchCSV.row([
                "decode", "\(r.threads)", "\(r.context)", "\(r.layers)", r.policy, r.kernel, f4(r.msPerStep.median),
                f4(r.msPerStep.min), f4(r.msPerStep.max), f4(r.msPerLayer), f4(r.stepsPerSecond), "\(r.bytesPerStep)",
                f4(r.gbps), r.percentOfBandwidth.map(f4) ?? "", r.speedupVsDenseF16.map(f4) ?? "",
                r.byteCeiling.map(f4) ?? "", "\(r.tokensHeldPerLayer)",
            ]))
        }
        for r in compute {
            out.append(BenchCSV.row([
                "compute", "1", "\(r.tokens)", "1", r.policy, r.kernel, "", "", "", "", "", "", "", "",
                r.relativeToDenseF16.map(f4) ?? "", "", "\(r.tokensHeld)", f4(r.nsPerTokenHead.min),
                f4(r.bytesPerTokenHead), r.projectedSpeedup.map(f4) ?? "",
            ]))
        }
        return out.joined(separator: "\n") + "\n"
    }
}

/// One policy's prefill of one layer at one context and thread count.
struct BenchPrefillRow: Codable {
    var threads: Int
    var context: Int
    var policy: String
    /// Milliseconds of one prefill call (a fresh 1-layer cache each repetition).
    var ms: BenchStats
    /// f32 key bytes of the layer (kvHeads x context x D x 4).
    var keyBytes: Int
    /// keyBytes / median time.
    var gbps: Double
    var percentOfBandwidth: Double?
    /// Tokens held per KV head after prefill.
    var tokensHeld: Int
    /// Used bytes of the layer after prefill.
    var storedBytes: Int

    enum CodingKeys: String, CodingKey {
        case threads, context, policy, ms, gbps
        case keyBytes = "key_bytes", percentOfBandwidth = "percent_of_bandwidth", tokensHeld = "tokens_held"
        case storedBytes = "stored_bytes"
    }
}

struct BenchPrefillReport: Codable {
    var command = "prefill"
    var version: String
    var machine: BenchMachine
    var preset: String
    var shape: ModelShape
    var kernel: String
    var repetitions: Int
    var seed: UInt64
    var threads: [Int]
    var contexts: [Int]
    var policies: [BenchPolicyEntry]
    var bandwidth: [BenchBandwidth] = []
    var rows: [BenchPrefillRow] = []
    var skipped: [BenchSkip] = []
    var seconds: Double = 0

    enum CodingKeys: String, CodingKey {
        case command, version, machine, preset, shape, kernel, repetitions, seed, threads, contexts, policies
        case bandwidth, rows, skipped, seconds
    }

    func json() throws -> String { try benchJSON(self) }

    func table() -> String {
        var lines: [String] = []
        lines.append("SparKV \(version) bench prefill: synthetic \(preset) shape (query heads \(shape.queryHeads), "
                     + "KV heads \(shape.kvHeads), D \(shape.headDim)), one layer, seed \(seed)")
        lines.append(machine.summary)
        if benchIsDebugBuild { lines.append("WARNING: debug build; timings are not representative") }
        lines.append("kernel: \(kernel); threads swept: \(threads.map(String.init).joined(separator: ", "))")
        lines.append("time of one prefill call (saliency, selection, packing, eviction scoring when on), fresh cache each time, "
                     + "median of \(repetitions); GB/s = f32 key bytes / median time")
        lines.append(benchBandwidthLine(bandwidth))
        for context in contexts {
            let group = rows.filter { $0.context == context }
            guard let first = group.first else { continue }
            lines.append("")
            lines.append("context \(context): f32 keys \(benchBytes(first.keyBytes)) per layer")
            var cells = [["policy", "threads", "ms", "min", "max", "GB/s keys", "% bw", "stored MiB", "tokens held"]]
            for r in group {
                cells.append([
                    r.policy, String(r.threads), f2(r.ms.median), f2(r.ms.min), f2(r.ms.max), f2(r.gbps),
                    r.percentOfBandwidth.map { f1($0) } ?? "-", f1(Double(r.storedBytes) / Double(1 << 20)),
                    String(r.tokensHeld),
                ])
            }
            lines.append(textTable(cells))
        }
        for s in skipped { lines.append("\nskipped: context \(s.context): \(s.reason)") }
        lines.append("")
        lines.append(String(format: "total time %.1f s", seconds))
        return lines.joined(separator: "\n")
    }

    func csv() -> String {
        var out = [BenchCSV.header]
        for b in bandwidth {
            out.append(BenchCSV.row(["bandwidth", "\(b.threads)", "", "", "probe-\(b.simd)\(b.prefetchUsed ? "-prefetch" : "")",
                                     "", "", "", "", "", "", "", f4(b.gbps)]))
        }
        for r in rows {
            out.append(BenchCSV.row([
                "prefill", "\(r.threads)", "\(r.context)", "1", r.policy, kernel, f4(r.ms.median), f4(r.ms.min),
                f4(r.ms.max), "", "", "\(r.keyBytes)", f4(r.gbps), r.percentOfBandwidth.map(f4) ?? "", "", "",
                "\(r.tokensHeld)",
            ]))
        }
        return out.joined(separator: "\n") + "\n"
    }
}

/// One CSV layout for every section (bandwidth, decode, compute, prefill); cells that do not apply are empty.
/// decode: ms = ms per step, bytes = bytes per step; prefill: ms = one prefill, bytes = f32 key bytes;
/// compute: threads 1, context = tokens, ns_per_token_head = the min over the samples, speedup = compute
/// speed-up vs dense f16 (from the mins).
enum BenchCSV {
    static let header = "section,threads,context,layers,policy,kernel,median_ms,min_ms,max_ms,ms_per_layer,steps_per_s,"
        + "bytes,gbps,percent_of_bandwidth,speedup_vs_dense_f16,byte_ceiling,tokens_held,ns_per_token_head,"
        + "bytes_per_token_head,projected_speedup"
    static let columns = header.split(separator: ",").count

    static func row(_ cells: [String]) -> String {
        let padded = cells + [String](repeating: "", count: max(0, columns - cells.count))
        return padded.map { $0.contains(",") || $0.contains("\"") ? "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : $0 }
            .joined(separator: ",")
    }
}

func benchBandwidthLine(_ bandwidth: [BenchBandwidth]) -> String {
    guard let first = bandwidth.first else { return "bandwidth probe: not run" }
    let each = bandwidth.map { b in
        "\(b.threads) thread\(b.threads == 1 ? "" : "s") \(f1(b.gbps)) GB/s (min \(f1(b.gbpsMin)), max \(f1(b.gbpsMax))"
            + "\(b.prefetchUsed ? ", sw prefetch" : "")"
            + ")"
    }
    return "bandwidth probe (streaming read of \(benchBytes(first.bytes)), \(first.simd) loop, median of \(first.passes) passes, "
        + "best of \(first.runs.count) runs before/after): " + each.joined(separator: "; ")
}

func benchJSON<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

private func f1(_ x: Double) -> String { String(format: "%.1f", x) }
private func f2(_ x: Double) -> String { String(format: "%.2f", x) }
private func f3(_ x: Double) -> String { String(format: "%.3f", x) }
private func f4(_ x: Double) -> String { String(format: "%.4g", x) }
