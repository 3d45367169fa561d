import CSparKV

/// An element type ``KVCache`` reads keys, values and window queries in, in place: `Float`,
/// `Float16` or ``BFloat16``.
///
/// Inference engines hold K/V in 16-bit floats; passing them as they are avoids a float32 copy.
/// Widening is exact: a cache prefilled from `Float16` keys is bit-identical to one prefilled from
/// the `Float` values of those keys. A 16-bit infinity or NaN is ``SparKVError/nonFinite(_:)``; a
/// finite ``BFloat16`` beyond the storage precision (say 1e5 stored as f16) is
/// ``SparKVError/range(_:)``.
///
/// ```swift
/// let keys: [Float16] = engineKeys       // [kvHeads][tokens][headDim]
/// try cache.prefill(layer: 0, keys: keys, values: values, windowQueries: window,
///                   tokenCount: 4096, windowCount: 32)
/// ```
public protocol KVElement: Sendable {
    /// The element type's tag, as the library names it.
    static var kvElementType: KVElementType { get }
}

/// The element types ``KVElement`` covers.
public enum KVElementType: String, Sendable, CaseIterable {
    /// IEEE binary32 (`Float`).
    case float32
    /// IEEE binary16 (`Float16`).
    case float16
    /// bfloat16 (``BFloat16``): the high 16 bits of a binary32.
    case bfloat16

    var cValue: sparkv_dtype {
        switch self {
        case .float32: return SPARKV_DTYPE_F32
        case .float16: return SPARKV_DTYPE_F16
        case .bfloat16: return SPARKV_DTYPE_BF16
        }
    }
}

extension Float: KVElement {
    public static var kvElementType: KVElementType { .float32 }
}

extension Float16: KVElement {
    public static var kvElementType: KVElementType { .float16 }
}

/// A bfloat16 value: the high half of an IEEE binary32. Swift has no bfloat16 type; this one only
/// carries the bits between an engine's buffers and the library, with exact conversion to `Float`
/// and round-to-nearest-even from it.
///
/// ```swift
/// let b = BFloat16(1.0)          // bitPattern 0x3F80
/// Float(b)                       // 1.0
/// BFloat16(bitPattern: 0x7F80)   // +infinity
/// ```
@frozen
public struct BFloat16: KVElement, Hashable, CustomStringConvertible {
    /// The 16 bits, as a binary32's high half.
    public var bitPattern: UInt16

    public static var kvElementType: KVElementType { .bfloat16 }

    /// The value with these bits.
    public init(bitPattern: UInt16) { self.bitPattern = bitPattern }

    /// `value` rounded to the nearest bfloat16, ties to even; NaN stays a (quiet) NaN.
    public init(_ value: Float) {
        let bits = value.bitPattern
        if value.isNaN {
            bitPattern = UInt16(truncatingIfNeeded: bits >> 16) | 0x0040
        } else {
            let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
            bitPattern = UInt16(truncatingIfNeeded: rounded >> 16)
        }
    }

    /// The exact binary32 value.
    public var floatValue: Float { Float(bitPattern: UInt32(bitPattern) << 16) }

    public var description: String { floatValue.description }
}

extension Float {
    /// The exact value of a ``BFloat16``.
    public init(_ value: BFloat16) { self = value.floatValue }
}
