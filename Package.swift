// swift-tools-version:6.0
import PackageDescription

// OpenMP comes from Debian's libomp-dev (LLVM 14): its omp.h and libomp.so are not on the Swift
// toolchain's default paths.
let ompInclude = "/usr/lib/llvm-14/lib/clang/14.0.6/include"
let ompLib = "/usr/lib/llvm-14/lib"

let ompCFlags: [String] = ["-std=c11", "-O3", "-fopenmp", "-isystem", ompInclude, "-ffp-contract=off",
                           "-Wall", "-Wextra", "-Wno-unused-parameter"]
let ompLinker: [LinkerSetting] = [
    .unsafeFlags(["-L\(ompLib)", "-Xlinker", "-rpath", "-Xlinker", ompLib]),
    .linkedLibrary("omp"),
    .linkedLibrary("m"),
]

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
            cSettings: [.headerSearchPath("csrc"), .unsafeFlags(ompCFlags + ["-fvisibility=hidden"])],
            linkerSettings: ompLinker
        ),
        .target(name: "SparKV", dependencies: ["CSparKV"]),
        // Benchmark helpers of the CLI (memory-bandwidth probe): not part of the library API.
        .target(name: "CSparKVBench", cSettings: [.unsafeFlags(ompCFlags)], linkerSettings: ompLinker),
        // Llama forward-pass kernels (quantized matmuls, RMSNorm, RoPE, SwiGLU) for the real-model path.
        .target(name: "CSparKVModel", cSettings: [.unsafeFlags(ompCFlags)], linkerSettings: ompLinker),
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
