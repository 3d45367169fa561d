// swift-tools-version:6.2
// 6.2: SwiftPM accepts the unsafe (OpenMP) flags below in packages that depend on SparKV by version.
import Foundation
import PackageDescription

/// Where OpenMP's header and runtime are. Clang needs `omp.h`, which Debian and Ubuntu ship only in
/// a versioned LLVM folder (libomp-dev), and `-lomp`. Found in this order:
///  1. SPARKV_OPENMP=off: build without OpenMP (single-threaded kernels; csrc/ guards every use).
///  2. SPARKV_OMP_INCLUDE (the folder holding omp.h) and optionally SPARKV_OMP_LIBDIR.
///  3. The newest /usr/lib/llvm-N/lib/clang/V/include/omp.h, with /usr/lib/llvm-N/lib; then
///     /usr/include/omp.h and /usr/local/include/omp.h with the default library path.
/// When nothing is found the library builds without OpenMP, as with SPARKV_OPENMP=off.
struct OpenMP {
    var include: String
    var libDir: String?

    static func find() -> OpenMP? {
        let env = ProcessInfo.processInfo.environment
        let fm = FileManager.default
        if env["SPARKV_OPENMP"] == "off" { return nil }
        if let inc = env["SPARKV_OMP_INCLUDE"], !inc.isEmpty {
            return OpenMP(include: inc, libDir: env["SPARKV_OMP_LIBDIR"].flatMap { $0.isEmpty ? nil : $0 })
        }
        // Newest LLVM first: compare the version numbers in the folder names numerically.
        func version(_ s: String) -> [Int] { s.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) } }
        let llvms = ((try? fm.contentsOfDirectory(atPath: "/usr/lib")) ?? [])
            .filter { $0.hasPrefix("llvm-") }
            .sorted { version($0).lexicographicallyPrecedes(version($1)) }
            .reversed()
        for llvm in llvms {
            let clang = "/usr/lib/\(llvm)/lib/clang"
            let versions = ((try? fm.contentsOfDirectory(atPath: clang)) ?? [])
                .sorted { version($0).lexicographicallyPrecedes(version($1)) }
                .reversed()
            for v in versions where fm.fileExists(atPath: "\(clang)/\(v)/include/omp.h") {
                let lib = "/usr/lib/\(llvm)/lib"
                if fm.fileExists(atPath: "\(lib)/libomp.so") { return OpenMP(include: "\(clang)/\(v)/include", libDir: lib) }
            }
        }
        for inc in ["/usr/include", "/usr/local/include"] where fm.fileExists(atPath: "\(inc)/omp.h") {
            return OpenMP(include: inc, libDir: nil)
        }
        return nil
    }
}

let openMP = OpenMP.find()
let warnings = ["-Wall", "-Wextra", "-Wno-unused-parameter"]
// -ffp-contract=off: no FMA contraction, so results do not depend on the compiler or the ISA.
let baseCFlags = ["-std=c11", "-O3", "-ffp-contract=off"] + warnings
let ompCFlags: [String] = openMP.map { ["-fopenmp", "-isystem", $0.include] } ?? []
let ompLinker: [LinkerSetting] = openMP.map { omp in
    var flags: [LinkerSetting] = []
    if let dir = omp.libDir { flags.append(.unsafeFlags(["-L\(dir)", "-Xlinker", "-rpath", "-Xlinker", dir])) }
    return flags + [.linkedLibrary("omp")]
} ?? []
let mathLib: [LinkerSetting] = [.linkedLibrary("m")]
/// csrc/ by concern, each folder on the library's include path: platform (CPU probe, fp16,
/// OpenMP), core (handle, policy, errors, planner), storage (the page format and its encoder,
/// quantization, recovery), pipeline (prefill and append stages), attention (decode kernels).
let csrcFolders = ["platform", "core", "storage", "pipeline", "attention"]

let package = Package(
    name: "SparKV",
    products: [
        .library(name: "SparKV", targets: ["SparKV"]),
        .library(name: "CSparKV", targets: ["CSparKV"]),
        .executable(name: "sparkv", targets: ["sparkv"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(
            name: "CSparKV",
            path: ".",
            sources: ["csrc"],
            publicHeadersPath: "include",
            cSettings: csrcFolders.map { .headerSearchPath("csrc/\($0)") }
                + [.unsafeFlags(baseCFlags + ompCFlags + ["-fvisibility=hidden"])],
            linkerSettings: ompLinker + mathLib
        ),
        .target(name: "SparKV", dependencies: ["CSparKV"]),
        // The CLI's C targets (bandwidth probe, model kernels) share csrc/platform: the CPU probe, fp16
        // conversion and OpenMP's API (omp_compat.h).
        .target(name: "CSparKVBench", cSettings: [.headerSearchPath("../../csrc/platform"), .unsafeFlags(baseCFlags + ompCFlags)],
                linkerSettings: ompLinker + mathLib),
        .target(name: "CSparKVModel", cSettings: [.headerSearchPath("../../csrc/platform"), .unsafeFlags(baseCFlags + ompCFlags)],
                linkerSettings: ompLinker + mathLib),
        .target(name: "SparKVModel", dependencies: ["SparKV", "CSparKVModel"]),
        .executableTarget(
            name: "sparkv",
            dependencies: ["SparKV", "SparKVModel", "CSparKVModel", "CSparKVBench",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "SparKVTests", dependencies: ["SparKV", "CSparKV"]),
        .testTarget(name: "SparKVModelTests", dependencies: ["SparKVModel", "SparKV"]),
    ]
)
