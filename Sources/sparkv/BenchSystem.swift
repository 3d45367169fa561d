import CSparKVBench
import Foundation
import SparKV

// Machine facts, timing, statistics, progress and the bandwidth probe of `sparkv bench`.

/// What the benchmark reports about the machine it ran on.
struct BenchMachine: Codable {
    /// "model name" of /proc/cpuinfo.
    var cpuModel: String
    var vendor: String
    var cpuFamily: Int?
    var cpuModelNumber: Int?
    var logicalCPUs: Int
    /// SIMD flags of /proc/cpuinfo that matter to the kernels.
    var simdFlags: [String]
    /// Size of the last-level cache in bytes (from sysfs), nil if unknown.
    var lastLevelCacheBytes: Int?
    var memTotalBytes: Int?
    var memAvailableBytes: Int?
    var openMPDefaultThreads: Int

    enum CodingKeys: String, CodingKey {
        case cpuModel = "cpu_model", vendor, cpuFamily = "cpu_family", cpuModelNumber = "cpu_model_number"
        case logicalCPUs = "logical_cpus", simdFlags = "simd_flags", lastLevelCacheBytes = "llc_bytes"
        case memTotalBytes = "mem_total_bytes", memAvailableBytes = "mem_available_bytes"
        case openMPDefaultThreads = "openmp_default_threads"
    }

    static func current() -> BenchMachine {
        var model = "unknown", vendor = "unknown"
        var family: Int?, number: Int?
        var flags: Set<String> = []
        if let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) {
            // The first processor's block is enough.
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2 else { if line.isEmpty { break } else { continue } }
                switch parts[0] {
                case "model name" where model == "unknown": model = parts[1]
                case "vendor_id" where vendor == "unknown": vendor = parts[1]
                case "cpu family" where family == nil: family = Int(parts[1])
                case "model" where number == nil: number = Int(parts[1])
                case "flags" where flags.isEmpty: flags = Set(parts[1].split(separator: " ").map(String.init))
                default: break
                }
            }
        }
        let interesting = ["avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512_vbmi2",
                           "avx512_vnni", "avx512_bf16", "avx512_fp16"]
        let meminfo = BenchMemory.meminfo()
        return BenchMachine(
            cpuModel: model, vendor: vendor, cpuFamily: family, cpuModelNumber: number,
            logicalCPUs: ProcessInfo.processInfo.activeProcessorCount,
            simdFlags: interesting.filter { flags.contains($0) }, lastLevelCacheBytes: lastLevelCache(),
            memTotalBytes: meminfo["MemTotal"], memAvailableBytes: meminfo["MemAvailable"],
            openMPDefaultThreads: Int(sparkv_bench_default_threads()))
    }

    /// The largest cache level of cpu0 in sysfs.
    private static func lastLevelCache() -> Int? {
        var best: (level: Int, bytes: Int)?
        for index in 0..<8 {
            let dir = "/sys/devices/system/cpu/cpu0/cache/index\(index)"
            guard let levelText = try? String(contentsOfFile: dir + "/level", encoding: .utf8),
                  let level = Int(levelText.trimmingCharacters(in: .whitespacesAndNewlines)),
                  let sizeText = try? String(contentsOfFile: dir + "/size", encoding: .utf8) else { continue }
            let s = sizeText.trimmingCharacters(in: .whitespacesAndNewlines)
            let unit: Int = s.hasSuffix("K") ? 1 << 10 : s.hasSuffix("M") ? 1 << 20 : s.hasSuffix("G") ? 1 << 30 : 1
            guard let n = Int(s.filter(\.isNumber)) else { continue }
            if best == nil || level > best!.level { best = (level, n * unit) }
        }
        return best?.bytes
    }

    /// One line for the table header.
    var summary: String {
        var s = "CPU: \(cpuModel) (\(vendor)"
        if let cpuFamily, let cpuModelNumber { s += ", family \(cpuFamily) model \(cpuModelNumber)" }
        s += "), \(logicalCPUs) logical CPUs"
        if let lastLevelCacheBytes { s += ", LLC \(benchBytes(lastLevelCacheBytes))" }
        if let memTotalBytes { s += ", RAM \(benchBytes(memTotalBytes))" }
        s += "; SIMD: \(simdFlags.isEmpty ? "baseline" : simdFlags.joined(separator: " "))"
        return s
    }
}

/// Physical memory, from /proc/meminfo.
enum BenchMemory {
    /// Fields of /proc/meminfo in bytes.
    static func meminfo() -> [String: Int] {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return [:] }
        var out: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let fields = parts[1].split(separator: " ")
            guard let n = fields.first.flatMap({ Int($0) }) else { continue }
            out[String(parts[0])] = fields.count > 1 && fields[1] == "kB" ? n * 1024 : n
        }
        return out
    }

    /// Bytes the benchmark may allocate now: 85% of MemAvailable (other processes keep the rest),
    /// or of MemTotal when MemAvailable is missing; nil if /proc/meminfo cannot be read.
    static func budget() -> Int? {
        let m = meminfo()
        guard let available = m["MemAvailable"] ?? m["MemTotal"] else { return nil }
        return available / 100 * 85
    }
}

/// Median, min, max of a sample.
struct BenchStats: Codable {
    var median: Double
    var min: Double
    var max: Double
    var count: Int

    init(_ samples: [Double]) {
        let s = samples.sorted()
        count = s.count
        guard !s.isEmpty else { median = .nan; min = .nan; max = .nan; return }
        median = s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        min = s[0]
        max = s[s.count - 1]
    }
}

/// Whether this binary is a debug build (Swift code unoptimized: the timings are not representative).
#if DEBUG
let benchIsDebugBuild = true
#else
let benchIsDebugBuild = false
#endif

/// Warns on stderr when the binary is a debug build.
func benchWarnIfDebug() {
    if benchIsDebugBuild {
        printError("sparkv bench: WARNING: this is a debug build; build with `swift build -c release` for meaningful numbers")
    }
}

/// Nanoseconds of a monotonic clock.
@inline(__always) func benchNow() -> UInt64 { sparkv_bench_now_ns() }

/// `bench`'s progress: messages that carry their own counts, shown through ``Progress`` (one
/// rewritten line on a terminal, occasional plain lines otherwise).
final class BenchProgress {
    private var progress = Progress(task: "bench", total: 1)

    func update(_ message: String) { progress.report(message) }

    /// Clears the line (before anything else is printed).
    func clear() { progress.clear() }

    /// A message that stays (skips, warnings): clears the progress line first.
    func note(_ message: String) { progress.note(message) }
}

/// The streaming-read bandwidth of one thread count.
struct BenchBandwidth: Codable {
    var threads: Int
    /// The better median of the two variants (with and without software prefetch).
    var gbps: Double
    var gbpsMin: Double
    var gbpsMax: Double
    var gbpsNoPrefetch: Double
    var gbpsPrefetch: Double
    var prefetchUsed: Bool
    var bytes: Int
    var passes: Int
    /// Read loop: "baseline", "avx2" or "avx512".
    var simd: String
    /// The (better-variant) median of every probe run: the probe runs before and after the
    /// measurements, and `gbps` is the highest, since other processes can only slow it down.
    var runs: [Double] = []

    enum CodingKeys: String, CodingKey {
        case threads, gbps, bytes, passes, simd
        case gbpsMin = "gbps_min", gbpsMax = "gbps_max", gbpsNoPrefetch = "gbps_no_prefetch"
        case gbpsPrefetch = "gbps_prefetch", prefetchUsed = "prefetch_used", runs
    }

    /// The better of two probe runs of the same thread count, with both runs' medians in `runs`.
    func merged(with other: BenchBandwidth) -> BenchBandwidth {
        var best = other.gbps > gbps ? other : self
        best.runs = runs + other.runs
        return best
    }

    /// Probes every thread count (before or after the measurements) and merges with `previous`.
    static func probeAll(_ threadCounts: [Int], previous: [BenchBandwidth], bytes: Int, passes: Int,
                         progress: BenchProgress, label: String) throws -> [BenchBandwidth] {
        try threadCounts.map { t in
            progress.update("\(label): bandwidth probe, \(t) thread\(t == 1 ? "" : "s"), \(benchBytes(bytes))")
            let now = try measure(bytes: bytes, threads: t, passes: passes)
            return previous.first { $0.threads == t }.map { $0.merged(with: now) } ?? now
        }
    }

    /// Runs the C probe with and without software prefetch and keeps the better median.
    static func measure(bytes: Int, threads: Int, passes: Int) throws -> BenchBandwidth {
        var plain = sparkv_bench_bandwidth_result(), fetched = sparkv_bench_bandwidth_result()
        guard sparkv_bench_bandwidth(UInt64(bytes), Int32(threads), Int32(passes), 0, &plain) == 0,
              sparkv_bench_bandwidth(UInt64(bytes), Int32(threads), Int32(passes), 1, &fetched) == 0 else {
            throw BenchError("bandwidth probe: cannot allocate \(benchBytes(bytes))")
        }
        let best = fetched.gbps_median > plain.gbps_median ? fetched : plain
        return BenchBandwidth(
            threads: Int(best.threads), gbps: best.gbps_median, gbpsMin: best.gbps_min, gbpsMax: best.gbps_max,
            gbpsNoPrefetch: plain.gbps_median, gbpsPrefetch: fetched.gbps_median, prefetchUsed: best.prefetch != 0,
            bytes: Int(best.bytes), passes: Int(best.passes),
            simd: best.simd == 3 ? "avx512" : best.simd == 2 ? "avx2" : "baseline", runs: [best.gbps_median])
    }

    /// Probe buffer size: `requested` MiB, or less if memory is short (at most a quarter of the
    /// budget), but never below 64 MiB.
    static func bufferBytes(requestedMiB: Int) -> Int {
        var bytes = requestedMiB << 20
        if let budget = BenchMemory.budget() { bytes = min(bytes, budget / 4) }
        return max(bytes, 64 << 20)
    }
}

/// A failure of the benchmark itself (not of the library).
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// "1.50 GiB", "32.0 MiB", "512 B".
func benchBytes(_ n: Int) -> String {
    let x = Double(n)
    if n >= 1 << 30 { return String(format: "%.2f GiB", x / Double(1 << 30)) }
    if n >= 1 << 20 { return String(format: "%.1f MiB", x / Double(1 << 20)) }
    if n >= 1 << 10 { return String(format: "%.1f KiB", x / Double(1 << 10)) }
    return "\(n) B"
}

/// `[heads][n][D]` -> `[n][heads][D]` (per-step rows out of a block of generated positions).
func benchTranspose(_ x: [Float], heads: Int, count n: Int, headDim d: Int) -> [Float] {
    var out = [Float](repeating: 0, count: x.count)
    x.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            for h in 0..<heads {
                for t in 0..<n {
                    let from = (h * n + t) * d, to = (t * heads + h) * d
                    for j in 0..<d { dst[to + j] = src[from + j] }
                }
            }
        }
    }
    return out
}

/// Writes `text` to `path`, creating or replacing the file.
func benchWrite(_ text: String, to path: String) throws {
    do {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    } catch {
        throw BenchError("cannot write \(path): \(error.localizedDescription)")
    }
}
