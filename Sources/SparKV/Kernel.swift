import CSparKV

extension KVCache {
    /// The family of attention kernels a cache runs. New caches start with the best one the CPU
    /// supports (``auto``), unless the environment variable `SPARKV_KERNEL=portable|avx2|avx512` says
    /// otherwise. All families compute the same result up to floating-point rounding; ``portable``
    /// is the specification the others are tested against.
    ///
    /// ```swift
    /// for kernel in KVCache.Kernel.allCases where kernel.isSupported { print(kernel.name) }
    /// try cache.setKernel(.portable)
    /// ```
    public enum Kernel: String, CaseIterable, Codable, Hashable, Sendable {
        /// The best family this CPU supports (resolved when set; a cache never reports `auto`).
        case auto
        /// Plain C11: the specification.
        case portable
        /// AVX2 + FMA + F16C.
        case avx2
        /// AVX-512 F/BW/VL/VBMI2 + F16C.
        case avx512

        /// Whether this CPU and build can run the family.
        ///
        /// ```swift
        /// if KVCache.Kernel.avx512.isSupported { try cache.setKernel(.avx512) }
        /// ```
        public var isSupported: Bool { sparkv_kernel_supported(cValue) != 0 }

        /// The library's name: "auto", "portable", "avx2" or "avx512".
        ///
        /// ```swift
        /// print(cache.kernel.name) // "avx512" on a recent Xeon
        /// ```
        public var name: String { String(cString: sparkv_kernel_name(cValue)) }

        var cValue: sparkv_kernel {
            switch self {
            case .auto: return SPARKV_KERNEL_AUTO
            case .portable: return SPARKV_KERNEL_PORTABLE
            case .avx2: return SPARKV_KERNEL_AVX2
            case .avx512: return SPARKV_KERNEL_AVX512
            }
        }

        init(cValue: sparkv_kernel) {
            self = Self.allCases.first(where: { $0.cValue == cValue }) ?? .portable
        }
    }
}
