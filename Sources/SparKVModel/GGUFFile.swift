#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file; unmapped when the last reference goes.
final class GGUFMapping: @unchecked Sendable {
    let base: UnsafeRawPointer?
    let size: Int

    init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw GGUFError.fileNotFound(path: path) }
            throw GGUFError.unreadable(path: path, reason: String(cString: strerror(code)))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw GGUFError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw GGUFError.unreadable(path: path, reason: "not a regular file")
        }
        size = Int(info.st_size)
        if size == 0 {
            base = nil   // mmap refuses empty files; the parser reports the truncation
            return
        }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw GGUFError.unreadable(path: path, reason: "mmap: " + String(cString: strerror(errno)))
        }
        base = UnsafeRawPointer(address)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }
}

/// A GGUF (version 3) model file, memory-mapped: its metadata and its tensors.
///
/// Opening parses the header, every metadata key/value and every tensor description, and checks
/// that each tensor's data lies inside the file; tensor data is never copied. Every read is
/// bounds-checked, so a corrupt file throws a ``GGUFError`` instead of crashing. The object is
/// immutable and may be shared between threads.
///
/// ```swift
/// let file = try GGUFFile(path: "models/SmolLM2-135M-Instruct.Q4_1.gguf")
/// let layers = try file.int("llama.block_count")              // 30
/// let eps = try file.double("llama.attention.layer_norm_rms_epsilon")
/// let q = try file.tensor(named: "blk.0.attn_q.weight")       // Q4_1 [576, 576]
/// let firstRow = try q.dequantizeRow(0)
/// ```
public final class GGUFFile: @unchecked Sendable {
    /// The path the file was opened from.
    public let path: String
    /// The GGUF format version (always 3).
    public let version: UInt32
    /// Size of the file in bytes.
    public let fileSize: Int
    /// Alignment of tensor data in bytes (`general.alignment`, 32 when absent).
    public let alignment: Int
    /// Offset of the data section (where tensor offsets count from) in the file.
    public let dataOffset: Int
    /// Every metadata value by key.
    public let metadata: [String: GGUFValue]
    /// The metadata keys in file order.
    public let metadataKeys: [String]
    /// Every tensor, in file order.
    public let tensors: [GGUFTensor]
    private let tensorIndex: [String: Int]
    private let mapping: GGUFMapping

    /// Maps and parses the GGUF file at `path`.
    ///
    /// - Throws: ``GGUFError``: ``GGUFError/fileNotFound(path:)``, ``GGUFError/unreadable(path:reason:)``,
    ///   ``GGUFError/truncated(what:offset:needed:fileSize:)``, ``GGUFError/badMagic(found:)``,
    ///   ``GGUFError/unsupportedVersion(_:)``, ``GGUFError/invalidFile(_:)``,
    ///   ``GGUFError/unsupportedTensorType(tensor:type:)``, ``GGUFError/badAlignment(_:)``,
    ///   ``GGUFError/tensorOutOfRange(tensor:detail:)``.
    public init(path: String) throws {
        self.path = path
        mapping = try GGUFMapping(path: path)
        fileSize = mapping.size
        var reader = GGUFReader(base: mapping.base, size: mapping.size)

        let magic = try reader.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else { throw GGUFError.badMagic(found: magic) }   // "GGUF"
        version = try reader.read(UInt32.self, "version")
        guard version == 3 else { throw GGUFError.unsupportedVersion(version) }
        let tensorCount = try reader.count("tensor count", minimumElementBytes: 8 + 4 + 8 + 4 + 8)
        let keyCount = try reader.count("metadata count", minimumElementBytes: 8 + 4 + 1)

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(keyCount)
        for _ in 0..<keyCount {
            let key = try reader.string("metadata key")
            let rawType = try reader.read(UInt32.self, "type of metadata \"\(key)\"")
            let value = try reader.value(rawType: rawType, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw GGUFError.invalidFile("duplicate metadata key \"\(key)\"")
            }
            keys.append(key)
        }
        self.metadata = metadata
        metadataKeys = keys

        if let value = metadata["general.alignment"] {
            guard value.type == .uint32, let a = value.int, a > 0, a & (a - 1) == 0 else {
                throw GGUFError.badAlignment("general.alignment is \(value) (\(value.type)), expected a power of two (uint32)")
            }
            alignment = a
        } else {
            alignment = 32
        }

        struct Info { var name: String; var shape: [Int]; var type: GGUFTensorType; var offset: Int; var bytes: Int }
        var infos: [Info] = []
        infos.reserveCapacity(tensorCount)
        var index: [String: Int] = [:]
        for _ in 0..<tensorCount {
            let name = try reader.string("tensor name")
            let dims = try reader.read(UInt32.self, "dimension count of tensor \"\(name)\"")
            guard (1...4).contains(dims) else {
                throw GGUFError.invalidFile("tensor \"\(name)\" has \(dims) dimensions (1 to 4 allowed)")
            }
            var shape: [Int] = []
            var elements = 1
            for d in 0..<Int(dims) {
                let raw = try reader.read(UInt64.self, "dimension \(d) of tensor \"\(name)\"")
                guard let n = Int(exactly: raw), n <= Int(Int32.max) * 1024 else {
                    throw GGUFError.invalidFile("tensor \"\(name)\" dimension \(d) is \(raw)")
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: n)
                guard !overflow else { throw GGUFError.invalidFile("tensor \"\(name)\" has too many elements") }
                elements = product
                shape.append(n)
            }
            let rawType = try reader.read(UInt32.self, "type of tensor \"\(name)\"")
            guard let type = GGUFTensorType(rawValue: rawType) else {
                throw GGUFError.unsupportedTensorType(tensor: name, type: rawType)
            }
            guard shape[0] % type.blockLength == 0, let bytes = type.byteCount(values: elements) else {
                throw GGUFError.invalidFile(
                    "tensor \"\(name)\" row length \(shape[0]) is not a multiple of the \(type) block length \(type.blockLength)")
            }
            let rawOffset = try reader.read(UInt64.self, "data offset of tensor \"\(name)\"")
            guard let offset = Int(exactly: rawOffset) else {
                throw GGUFError.tensorOutOfRange(tensor: name, detail: "data offset \(rawOffset) is beyond the file")
            }
            guard index.updateValue(infos.count, forKey: name) == nil else {
                throw GGUFError.invalidFile("duplicate tensor name \"\(name)\"")
            }
            infos.append(Info(name: name, shape: shape, type: type, offset: offset, bytes: bytes))
        }

        // The data section starts at the next multiple of the alignment; a file with no tensor may
        // end before it.
        let headerEnd = reader.offset
        let dataStart = (headerEnd + alignment - 1) / alignment * alignment
        dataOffset = dataStart

        var tensors: [GGUFTensor] = []
        tensors.reserveCapacity(infos.count)
        for info in infos {
            guard info.offset % alignment == 0 else {
                throw GGUFError.badAlignment(
                    "tensor \"\(info.name)\" data offset \(info.offset) is not a multiple of \(alignment)")
            }
            let (start, o1) = dataStart.addingReportingOverflow(info.offset)
            let (end, o2) = start.addingReportingOverflow(info.bytes)
            // (The mapping exists: an empty file fails on its magic.)
            guard !o1, !o2, end <= fileSize, let base = mapping.base else {
                throw GGUFError.tensorOutOfRange(
                    tensor: info.name,
                    detail: "its \(info.bytes) bytes at data offset \(info.offset) (file offset \(dataStart) + "
                        + "\(info.offset)) end past the end of the \(fileSize)-byte file")
            }
            tensors.append(GGUFTensor(name: info.name, type: info.type, shape: info.shape, offset: info.offset,
                                      byteCount: info.bytes, data: base + start, owner: mapping))
        }
        self.tensors = tensors
        tensorIndex = index
    }

    /// The names of all tensors, in file order.
    public var tensorNames: [String] { tensors.map(\.name) }

    /// Whether the file has a tensor with that name.
    public func hasTensor(named name: String) -> Bool { tensorIndex[name] != nil }

    /// The tensor with that name.
    ///
    /// ```swift
    /// let embedding = try file.tensor(named: "token_embd.weight")
    /// ```
    /// - Throws: ``GGUFError/missingTensor(_:)``.
    public func tensor(named name: String) throws -> GGUFTensor {
        guard let i = tensorIndex[name] else { throw GGUFError.missingTensor(name) }
        return tensors[i]
    }

    /// The start of the whole mapped file (nil only for an empty file, which never opens).
    public var baseAddress: UnsafeRawPointer? { mapping.base }

    // MARK: Typed metadata accessors

    /// The metadata value of `key`.
    /// - Throws: ``GGUFError/missingKey(_:)``.
    public func value(_ key: String) throws -> GGUFValue {
        guard let value = metadata[key] else { throw GGUFError.missingKey(key) }
        return value
    }

    /// An integer metadata value (any integer width).
    ///
    /// ```swift
    /// try file.int("llama.embedding_length")   // 576
    /// ```
    /// - Throws: ``GGUFError/missingKey(_:)``, ``GGUFError/metadataType(key:expected:found:)``.
    public func int(_ key: String) throws -> Int {
        let v = try value(key)
        guard let i = v.int else { throw GGUFError.metadataType(key: key, expected: "an integer", found: v.type.description) }
        return i
    }

    /// A numeric metadata value as a Double (float32 values are widened exactly).
    ///
    /// ```swift
    /// try file.double("llama.rope.freq_base")   // 100000.0
    /// ```
    public func double(_ key: String) throws -> Double {
        let v = try value(key)
        guard let d = v.double else { throw GGUFError.metadataType(key: key, expected: "a number", found: v.type.description) }
        return d
    }

    /// A numeric metadata value as a Float.
    public func float(_ key: String) throws -> Float { Float(try double(key)) }

    /// A bool metadata value.
    public func bool(_ key: String) throws -> Bool {
        let v = try value(key)
        guard let b = v.bool else { throw GGUFError.metadataType(key: key, expected: "a bool", found: v.type.description) }
        return b
    }

    /// A string metadata value.
    ///
    /// ```swift
    /// try file.string("general.architecture")   // "llama"
    /// ```
    public func string(_ key: String) throws -> String {
        let v = try value(key)
        guard let s = v.string else { throw GGUFError.metadataType(key: key, expected: "a string", found: v.type.description) }
        return s
    }

    /// An array-of-strings metadata value.
    ///
    /// ```swift
    /// try file.stringArray("tokenizer.ggml.tokens").count   // 49152
    /// ```
    public func stringArray(_ key: String) throws -> [String] {
        let v = try value(key)
        guard let a = v.stringArray else {
            throw GGUFError.metadataType(key: key, expected: "an array of strings", found: Self.typeName(v))
        }
        return a
    }

    /// An array-of-integers metadata value.
    public func intArray(_ key: String) throws -> [Int] {
        let v = try value(key)
        guard let a = v.intArray else {
            throw GGUFError.metadataType(key: key, expected: "an array of integers", found: Self.typeName(v))
        }
        return a
    }

    private static func typeName(_ v: GGUFValue) -> String {
        if case .array(let type, _) = v { return "an array of \(type)" }
        return v.type.description
    }
}

/// A bounds-checked little-endian cursor over the mapped bytes.
struct GGUFReader {
    let base: UnsafeRawPointer?
    let size: Int
    private(set) var offset = 0

    /// Arrays nested deeper than this are rejected (the format allows nesting; real files use at
    /// most one level, and unbounded recursion would let a corrupt file exhaust the stack).
    static let maxDepth = 8

    init(base: UnsafeRawPointer?, size: Int) {
        self.base = base
        self.size = size
    }

    /// Checks that `count` bytes can be read at the cursor and returns their start.
    mutating func take(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawPointer {
        guard count >= 0, count <= size - offset, let base else {
            throw GGUFError.truncated(what: what(), offset: offset, needed: count, fileSize: size)
        }
        let p = base + offset
        offset += count
        return p
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        T(littleEndian: try take(MemoryLayout<T>.size, what()).loadUnaligned(as: T.self))
    }

    /// A uint64 element count, rejected when even the smallest elements could not fit in the rest
    /// of the file (so a corrupt count cannot trigger a huge allocation or a long loop).
    mutating func count(_ what: String, minimumElementBytes: Int) throws -> Int {
        let start = offset
        let raw = try read(UInt64.self, what)
        let remaining = UInt64(size - offset)
        guard raw <= remaining / UInt64(max(minimumElementBytes, 1)) else {
            throw GGUFError.truncated(
                what: "\(raw) entries of \(what) (at least \(minimumElementBytes) bytes each)", offset: start,
                needed: raw > UInt64(Int.max) / UInt64(max(minimumElementBytes, 1))
                    ? Int.max : Int(raw) * minimumElementBytes,
                fileSize: size)
        }
        return Int(raw)
    }

    mutating func string(_ what: @autoclosure () -> String) throws -> String {
        let start = offset
        let raw = try read(UInt64.self, what())
        guard raw <= UInt64(size - offset) else {
            throw GGUFError.truncated(what: "\(what()) (\(raw)-byte string)", offset: start,
                                      needed: raw > UInt64(Int.max) ? Int.max : Int(raw), fileSize: size)
        }
        let p = try take(Int(raw), what())
        return String(decoding: UnsafeRawBufferPointer(start: p, count: Int(raw)), as: UTF8.self)
    }

    mutating func value(rawType: UInt32, key: String, depth: Int) throws -> GGUFValue {
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw GGUFError.invalidFile("metadata \"\(key)\" has unknown value type \(rawType)")
        }
        let what = "metadata \"\(key)\""
        switch type {
        case .uint8: return .uint8(try read(UInt8.self, what))
        case .int8: return .int8(try read(Int8.self, what))
        case .uint16: return .uint16(try read(UInt16.self, what))
        case .int16: return .int16(try read(Int16.self, what))
        case .uint32: return .uint32(try read(UInt32.self, what))
        case .int32: return .int32(try read(Int32.self, what))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self, what)))
        case .uint64: return .uint64(try read(UInt64.self, what))
        case .int64: return .int64(try read(Int64.self, what))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self, what)))
        case .bool:
            let b = try read(UInt8.self, what)
            guard b <= 1 else { throw GGUFError.invalidFile("metadata \"\(key)\" is a bool of value \(b)") }
            return .bool(b == 1)
        case .string:
            return .string(try string(what))
        case .array:
            guard depth < Self.maxDepth else {
                throw GGUFError.invalidFile("metadata \"\(key)\" nests arrays deeper than \(Self.maxDepth)")
            }
            let rawElement = try read(UInt32.self, "element type of \(what)")
            guard let elementType = GGUFValueType(rawValue: rawElement) else {
                throw GGUFError.invalidFile("metadata \"\(key)\" is an array of unknown value type \(rawElement)")
            }
            // Smallest encoding of one element: its fixed size, 8 for a string (the length), 12
            // for an array (element type + count).
            let minimum = elementType.fixedSize ?? (elementType == .string ? 8 : 12)
            let n = try count("array \(what)", minimumElementBytes: minimum)
            var elements: [GGUFValue] = []
            elements.reserveCapacity(n)
            if let fixed = elementType.fixedSize {
                // Fixed-size elements: one bounds check for the whole array.
                let p = try take(n * fixed, what)
                var sub = GGUFReader(base: p, size: n * fixed)
                for _ in 0..<n { elements.append(try sub.value(rawType: rawElement, key: key, depth: depth + 1)) }
            } else {
                for _ in 0..<n { elements.append(try value(rawType: rawElement, key: key, depth: depth + 1)) }
            }
            return .array(elementType: elementType, elements: elements)
        }
    }
}
