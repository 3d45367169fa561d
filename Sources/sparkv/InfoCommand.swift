import ArgumentParser
import Foundation
import CSparKVBench
import SparKV

/// `sparkv info`: library version, kernels this CPU supports, defaults.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show the library version, the attention kernels this CPU supports and the default policy."
    )

    @Flag(help: "Print as JSON.")
    var json = false

    struct Info: Codable {
        var version: String
        var supportedKernels: [String]
        var defaultKernel: String
        var openMPDefaultThreads: Int
        var openMP: Bool
        var defaultPolicy: CompressionPolicy

        enum CodingKeys: String, CodingKey {
            case version
            case supportedKernels = "supported_kernels"
            case defaultKernel = "default_kernel"
            case openMPDefaultThreads = "openmp_default_threads"
            case openMP = "openmp"
            case defaultPolicy = "default_policy"
        }
    }

    func run() throws {
        let probe = try KVCache(shape: ModelShape(layers: 1, queryHeads: 1, kvHeads: 1, headDim: 128, capacity: 1))
        let info = Info(
            version: KVCache.libraryVersion,
            supportedKernels: KVCache.Kernel.allCases.filter { $0 != .auto && $0.isSupported }.map(\.name),
            defaultKernel: probe.kernel.name, openMPDefaultThreads: probe.threadCount,
            openMP: sparkv_bench_openmp() != 0, defaultPolicy: CompressionPolicy())
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(info), as: UTF8.self))
        } else {
            print("SparKV \(info.version)")
            print("kernels supported: \(info.supportedKernels.joined(separator: ", ")) (default for new caches: \(info.defaultKernel))")
            if info.openMP {
                print("OpenMP default threads: \(info.openMPDefaultThreads)")
            } else {
                print("warning: built without OpenMP: every kernel runs on one thread (install libomp-dev, or set "
                      + "SPARKV_OMP_INCLUDE to the folder holding omp.h, and rebuild)")
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print("default policy: \(String(decoding: try encoder.encode(info.defaultPolicy), as: UTF8.self))")
        }
    }
}
