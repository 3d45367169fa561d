/// The type code of a GGUF metadata value (the numbers are the file format's).
public enum GGUFValueType: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    public var description: String {
        switch self {
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .uint32: return "uint32"
        case .int32: return "int32"
        case .float32: return "float32"
        case .bool: return "bool"
        case .string: return "string"
        case .array: return "array"
        case .uint64: return "uint64"
        case .int64: return "int64"
        case .float64: return "float64"
        }
    }

    /// Bytes of one value of a fixed-size type; nil for string and array.
    var fixedSize: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string, .array: return nil
        }
    }
}

/// One metadata value of a GGUF file, of any GGUF type, arrays (also nested) included.
///
/// Read it with the typed views, which convert between integer widths and return nil when the
/// value is of another kind:
///
/// ```swift
/// let file = try GGUFFile(path: path)
/// let layers = file.metadata["llama.block_count"]?.int          // 30
/// let base = file.metadata["llama.rope.freq_base"]?.double       // 100000.0
/// let tokens = file.metadata["tokenizer.ggml.tokens"]?.stringArray
/// ```
public enum GGUFValue: Sendable, Hashable, CustomStringConvertible {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case float32(Float)
    case bool(Bool)
    case string(String)
    /// An array: its element type from the file (also for an empty array) and its elements, which
    /// a file's arrays decode on access (see ``GGUFArray``).
    case array(GGUFArray)
    case uint64(UInt64)
    case int64(Int64)
    case float64(Double)

    /// An array value of `elements`, all of type `elementType`.
    ///
    /// ```swift
    /// let ids = GGUFValue.array(elementType: .int32, elements: [.int32(1), .int32(2)])
    /// ```
    public static func array(elementType: GGUFValueType, elements: [GGUFValue]) -> GGUFValue {
        .array(GGUFArray(elementType: elementType, elements: elements))
    }

    /// The GGUF type of this value.
    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// The value as an Int if it is an integer of any width that fits in Int; nil otherwise.
    ///
    /// ```swift
    /// GGUFValue.uint32(30).int   // 30
    /// GGUFValue.string("30").int // nil
    /// ```
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// The value as a Double if it is a float (float32 widened exactly) or an integer.
    ///
    /// ```swift
    /// GGUFValue.float32(1e-5).double   // 9.999999747378752e-06 (the float32 value, exactly)
    /// ```
    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }

    /// The value as a Float if it is a float or an integer (float64 is rounded to Float).
    public var float: Float? { double.map(Float.init) }

    /// The value if it is a bool.
    public var bool: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    /// The value if it is a string.
    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    /// The elements if the value is an array.
    public var array: GGUFArray? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The elements if the value is an array of strings.
    public var stringArray: [String]? {
        guard case .array(let a) = self, a.elementType == .string else { return nil }
        return a.map { $0.string ?? "" }
    }

    /// The elements as Ints if the value is an array of integers that all fit in Int.
    public var intArray: [Int]? {
        guard case .array(let a) = self else { return nil }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for element in a {
            guard let v = element.int else { return nil }
            out.append(v)
        }
        return out
    }

    /// The elements as Doubles if the value is an array of numbers.
    public var doubleArray: [Double]? {
        guard case .array(let a) = self else { return nil }
        var out: [Double] = []
        out.reserveCapacity(a.count)
        for element in a {
            guard let v = element.double else { return nil }
            out.append(v)
        }
        return out
    }

    /// A short rendering: scalars as themselves, strings quoted (at most
    /// ``GGUFError/quoteLimit`` characters), arrays by type and count with their first elements.
    public var description: String {
        switch self {
        case .uint8(let v): return "\(v)"
        case .int8(let v): return "\(v)"
        case .uint16(let v): return "\(v)"
        case .int16(let v): return "\(v)"
        case .uint32(let v): return "\(v)"
        case .int32(let v): return "\(v)"
        case .float32(let v): return "\(v)"
        case .bool(let v): return "\(v)"
        case .string(let v): return quoted(v)
        case .uint64(let v): return "\(v)"
        case .int64(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        case .array(let a): return a.description
        }
    }
}

/// The elements of a GGUF array value, all of one ``elementType``.
///
/// An array read from a file is not materialised: fixed-size elements are decoded from the file's
/// bytes on access, and strings and nested arrays are located by one offset per element. So a
/// 90 MB array costs at most about its own size in memory, not the ~25x of one boxed
/// ``GGUFValue`` per element. The file was validated when it was opened, so access cannot fail.
///
/// ```swift
/// if let tokens = try file.value("tokenizer.ggml.tokens").array {   // 49152 strings, none decoded yet
///     print(tokens.elementType, tokens.count, tokens[905])            // string 49152 "Ġworld"
/// }
/// ```
public struct GGUFArray: RandomAccessCollection, Hashable, @unchecked Sendable, CustomStringConvertible {
    /// The type of every element (also of an empty array).
    public let elementType: GGUFValueType
    /// Number of elements.
    public let count: Int
    let storage: Storage

    /// Where the elements are. `base` points into memory kept alive by `owner`.
    enum Storage {
        /// Elements built in code.
        case values([GGUFValue])
        /// `count` fixed-size elements, one after the other from `base`.
        case fixed(base: UnsafeRawPointer, owner: AnyObject?)
        /// Strings or nested arrays: element `i` is encoded in bytes `offsets[i]..<offsets[i + 1]`
        /// from `base` (`offsets` has `count + 1` entries).
        case variable(base: UnsafeRawPointer, offsets: [Int], depth: Int, owner: AnyObject?)
    }

    /// An array of `elements`, all of type `elementType` (not checked).
    public init(elementType: GGUFValueType, elements: [GGUFValue]) {
        self.elementType = elementType
        count = elements.count
        storage = .values(elements)
    }

    init(elementType: GGUFValueType, count: Int, storage: Storage) {
        self.elementType = elementType
        self.count = count
        self.storage = storage
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> GGUFValue {
        precondition(position >= 0 && position < count, "GGUFArray index \(position) out of range 0..<\(count)")
        switch storage {
        case .values(let elements):
            return elements[position]
        case .fixed(let base, _):
            // fixedSize is non-nil for this storage (the reader builds it only for fixed types).
            return Self.decodeFixed(elementType, at: base + position * (elementType.fixedSize ?? 0))
        case .variable(let base, let offsets, let depth, let owner):
            let start = offsets[position]
            var reader = GGUFReader(base: base + start, size: offsets[position + 1] - start, owner: owner)
            // The bytes were validated by the same reader when the file was opened; the fallback
            // is unreachable unless the mapped file was changed underneath.
            return (try? reader.value(rawType: elementType.rawValue, key: "", depth: depth))
                ?? (elementType == .string ? .string("") : .array(elementType: .uint8, elements: []))
        }
    }

    static func decodeFixed(_ type: GGUFValueType, at p: UnsafeRawPointer) -> GGUFValue {
        switch type {
        case .uint8: return .uint8(p.load(as: UInt8.self))
        case .int8: return .int8(Int8(bitPattern: p.load(as: UInt8.self)))
        case .bool: return .bool(p.load(as: UInt8.self) != 0)
        case .uint16: return .uint16(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
        case .int16: return .int16(Int16(littleEndian: p.loadUnaligned(as: Int16.self)))
        case .uint32: return .uint32(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
        case .int32: return .int32(Int32(littleEndian: p.loadUnaligned(as: Int32.self)))
        case .float32: return .float32(Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))))
        case .uint64: return .uint64(UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)))
        case .int64: return .int64(Int64(littleEndian: p.loadUnaligned(as: Int64.self)))
        case .float64: return .float64(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))))
        case .string, .array: return .uint8(0)   // not fixed-size: never stored as such
        }
    }

    public static func == (a: GGUFArray, b: GGUFArray) -> Bool {
        a.elementType == b.elementType && a.count == b.count && a.elementsEqual(b)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(elementType)
        hasher.combine(count)
        for element in self { hasher.combine(element) }
    }

    /// "[type x count]" and the first four elements (nested arrays by type and count only, so that
    /// the rendering of arrays nested 8 deep stays short).
    public var description: String {
        let head = prefix(4).map { $0.array.map { "[\($0.elementType) x \($0.count)]" } ?? $0.description }
            .joined(separator: ", ")
        return "[\(elementType) x \(count)]" + (isEmpty ? "" : " [\(head)\(count > 4 ? ", ..." : "")]")
    }
}

/// `s` in double quotes for an error message, cut to its first ``GGUFError/quoteLimit`` Unicode
/// scalars with an ellipsis: names and keys come from the file, and a file can make them
/// hundreds of megabytes long.
func quoted(_ s: String, limit: Int = GGUFError.quoteLimit) -> String {
    var scalars = s.unicodeScalars.prefix(limit + 1).map(Character.init)
    // Counting scalars (not Characters) keeps this O(limit) even for one enormous grapheme cluster.
    if scalars.count > limit {
        scalars.removeLast(scalars.count - limit)
        return "\"" + String(scalars) + "…\""
    }
    return "\"" + String(scalars) + "\""
}
