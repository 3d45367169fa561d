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
    /// An array: the element type from the file (also for an empty array) and the elements.
    case array(elementType: GGUFValueType, elements: [GGUFValue])
    case uint64(UInt64)
    case int64(Int64)
    case float64(Double)

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
    public var array: [GGUFValue]? {
        if case .array(_, let elements) = self { return elements }
        return nil
    }

    /// The elements if the value is an array of strings.
    public var stringArray: [String]? {
        guard case .array(let type, let elements) = self, type == .string else { return nil }
        return elements.map { $0.string ?? "" }
    }

    /// The elements as Ints if the value is an array of integers that all fit in Int.
    public var intArray: [Int]? {
        guard case .array(_, let elements) = self else { return nil }
        var out: [Int] = []
        out.reserveCapacity(elements.count)
        for element in elements {
            guard let v = element.int else { return nil }
            out.append(v)
        }
        return out
    }

    /// The elements as Doubles if the value is an array of numbers.
    public var doubleArray: [Double]? {
        guard case .array(_, let elements) = self else { return nil }
        var out: [Double] = []
        out.reserveCapacity(elements.count)
        for element in elements {
            guard let v = element.double else { return nil }
            out.append(v)
        }
        return out
    }

    /// A short rendering: scalars as themselves, strings quoted, arrays by type and count with
    /// their first elements.
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
        case .string(let v): return "\"\(v)\""
        case .uint64(let v): return "\(v)"
        case .int64(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        case .array(let type, let elements):
            let head = elements.prefix(4).map(\.description).joined(separator: ", ")
            return "[\(type) x \(elements.count)]" + (elements.isEmpty ? "" : " [\(head)\(elements.count > 4 ? ", ..." : "")]")
        }
    }
}
