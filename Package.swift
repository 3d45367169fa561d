// swift-tools-version:6.0
import PackageDescription

// OpenMP comes from Debian's libomp-dev (LLVM 14): its omp.h and libomp.so are not on the Swift
// toolchain's default paths.
let ompInclude = "/usr/lib/llvm-14/lib/clang/14.0.6/include"
let ompLib = "/usr/lib/llvm-14/lib"

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
            cSettings: [
                .headerSearchPath("csrc"),
                .unsafeFlags(["-std=c11", "-O3", "-fopenmp", "-isystem", ompInclude, "-fvisibility=hidden",
                              "-Wall", "-Wextra", "-Wno-unused-parameter"]),
            ],
            linkerSettings: [
                .unsafeFlags(["-L\(ompLib)", "-Xlinker", "-rpath", "-Xlinker", ompLib]),
                .linkedLibrary("omp"),
                .linkedLibrary("m"),
            ]
        ),
        .target(name: "SparKV", dependencies: ["CSparKV"]),
        .executableTarget(
            name: "sparkv",
            dependencies: ["SparKV", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "SparKVTests", dependencies: ["SparKV", "CSparKV"]),
    ]
)
