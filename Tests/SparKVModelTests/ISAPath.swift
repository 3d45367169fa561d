// ISAPath.swift — the model kernels' ISA paths, for tests that run a kernel on each.

import CSparKVModel
import Foundation
import Testing

/// One ISA path of the model kernels (CSparKVModel).
enum ISAPath: CaseIterable, CustomStringConvertible {
    case portable, avx2, avx512

    var isa: svm_isa {
        switch self {
        case .portable: return SVM_ISA_PORTABLE
        case .avx2: return SVM_ISA_AVX2
        case .avx512: return SVM_ISA_AVX512
        }
    }
    var supported: Bool { svm_isa_supported(isa) != 0 }
    var description: String { String(cString: svm_isa_name(isa)) }
    /// The paths this CPU runs.
    static var available: [ISAPath] { allCases.filter(\.supported) }
}

/// The ISA and thread count are process-wide: suites running in parallel must not switch them
/// under each other's feet.
private let isaLock = NSLock()

/// Runs `body` while no other test switches the ISA or thread count.
func holdingISA<T>(_ body: () throws -> T) rethrows -> T {
    isaLock.lock()
    defer { isaLock.unlock() }
    return try body()
}

/// Runs `body` on one ISA path and thread count, the previous settings restored afterwards; one
/// such body at a time across all suites.
func onPath<T>(_ path: ISAPath, threads: Int = 2, _ body: () throws -> T) rethrows -> T {
    try holdingISA {
        let oldISA = svm_get_isa(), oldThreads = svm_get_threads()
        #expect(svm_set_isa(path.isa) == SVM_OK)
        #expect(svm_get_isa() == path.isa)
        svm_set_threads(Int32(threads))
        defer {
            _ = svm_set_isa(oldISA)
            svm_set_threads(oldThreads)
        }
        return try body()
    }
}
