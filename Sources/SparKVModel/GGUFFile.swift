#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes of a GGUF file: a read-only memory mapping of a whole file, or a private copy of
/// bytes handed over in memory; released when the last reference goes.
final class GGUFMapping: @unchecked Sendable {
    let base: UnsafeRawPointer?
    let size: Int
    /// Whether `base` was allocated (a copy) rather than mapped.
    private let owned: Bool

    init(path: String) throws {
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait, forever, for a writer; only
        // regular files are accepted below anyway (no effect on regular files).
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
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
            throw GGUFError.unreadable(path: path, reason: "not a regular file (\(Self.kind(info.st_mode)))")
        }
        owned = false
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

    /// A private copy of `bytes`, allocated to their exact size (so that a sanitizer catches any
    /// read past the end).
    init(copying bytes: UnsafeRawBufferPointer) {
        owned = true
        size = bytes.count
        guard let source = bytes.baseAddress, size > 0 else {
            base = nil
            return
        }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        copy.copyMemory(from: source, byteCount: size)
        base = UnsafeRawPointer(copy)
    }

    deinit {
        guard let base else { return }
        if owned { UnsafeMutableRawPointer(mutating: base).deallocate() }
        else { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "another kind of file"
        }
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
    public convenience init(path: String) throws {
        try self.init(mapping: try GGUFMapping(path: path), path: path)
    }

    /// Parses a GGUF file held in memory (copied; the copy lives as long as the object or any
    /// tensor taken from it). ``path`` is "(memory)".
    ///
    /// ```swift
    /// let file = try GGUFFile(bytes: [UInt8](try Data(contentsOf: url)))
    /// ```
    /// - Throws: the ``GGUFError``s of ``init(path:)`` about the contents.
    public convenience init(bytes: UnsafeRawBufferPointer) throws {
        try self.init(mapping: GGUFMapping(copying: bytes), path: "(memory)")
    }

    /// Parses a GGUF file held in memory (copied, like the `UnsafeRawBufferPointer` variant).
    public convenience init(bytes: [UInt8]) throws {
        let mapping = bytes.withUnsafeBytes { GGUFMapping(copying: $0) }
        try self.init(mapping: mapping, path: "(memory)")
    }

    /// The longest metadata key the GGUF specification allows (2^16 - 1 bytes).
    public static let maxKeyBytes = 65_535
    /// The longest tensor name the GGUF specification allows (ggml's GGML_MAX_NAME is 64 bytes
    /// including its terminating zero; the specification says "at most 64 bytes").
    public static let maxTensorNameBytes = 64

    private init(mapping: GGUFMapping, path: String) throws {
        self.path = path
        self.mapping = mapping
        fileSize = mapping.size
        var reader = GGUFReader(base: mapping.base, size: mapping.size, owner: mapping)

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
            let key = try reader.string("metadata key", maxBytes: Self.maxKeyBytes)
            let rawType = try reader.read(UInt32.self, "type of metadata \(quoted(key))")
            let value = try reader.value(rawType: rawType, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw GGUFError.invalidFile("duplicate metadata key \(quoted(key))")
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
            let name = try reader.string("tensor name", maxBytes: Self.maxTensorNameBytes)
            let shown = quoted(name)
            let dims = try reader.read(UInt32.self, "dimension count of tensor \(shown)")
            guard (1...4).contains(dims) else {
                throw GGUFError.invalidFile("tensor \(shown) has \(dims) dimensions (1 to 4 allowed)")
            }
            var shape: [Int] = []
            var elements = 1
            for d in 0..<Int(dims) {
                let raw = try reader.read(UInt64.self, "dimension \(d) of tensor \(shown)")
                guard let n = Int(exactly: raw), n <= Int(Int32.max) * 1024 else {
                    throw GGUFError.invalidFile("tensor \(shown) dimension \(d) is \(raw)")
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: n)
                guard !overflow else { throw GGUFError.invalidFile("tensor \(shown) has too many elements") }
                elements = product
                shape.append(n)
            }
            let rawType = try reader.read(UInt32.self, "type of tensor \(shown)")
            guard let type = GGUFTensorType(rawValue: rawType) else {
                throw GGUFError.unsupportedTensorType(tensor: name, type: rawType)
            }
            guard shape[0] % type.blockLength == 0, let bytes = type.byteCount(values: elements) else {
                throw GGUFError.invalidFile(
                    "tensor \(shown) row length \(shape[0]) is not a multiple of the \(type) block length \(type.blockLength)")
            }
            let rawOffset = try reader.read(UInt64.self, "data offset of tensor \(shown)")
            guard let offset = Int(exactly: rawOffset) else {
                throw GGUFError.tensorOutOfRange(tensor: name, detail: "data offset \(rawOffset) is beyond the file")
            }
            guard index.updateValue(infos.count, forKey: name) == nil else {
                throw GGUFError.invalidFile("duplicate tensor name \(shown)")
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
                    "tensor \(quoted(info.name)) data offset \(info.offset) is not a multiple of \(alignment)")
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
        if case .array(let a) = v { return "an array of \(a.elementType)" }
        return v.type.description
    }
}

/// A bounds-checked little-endian cursor over the mapped bytes.
struct GGUFReader {
    let base: UnsafeRawPointer?
    let size: Int
    /// Keeps `base` alive in the arrays the reader returns.
    let owner: AnyObject?
    private(set) var offset = 0

    /// Arrays nested deeper than this are rejected (the format allows nesting; real files use at
    /// most one level, and unbounded recursion would let a corrupt file exhaust the stack).
    static let maxDepth = 8

    init(base: UnsafeRawPointer?, size: Int, owner: AnyObject?) {
        self.base = base
        self.size = size
        self.owner = owner
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
    mutating func count(_ what: @autoclosure () -> String, minimumElementBytes: Int) throws -> Int {
        let start = offset
        let raw = try read(UInt64.self, what())
        let remaining = UInt64(size - offset)
        guard raw <= remaining / UInt64(max(minimumElementBytes, 1)) else {
            throw GGUFError.truncated(
                what: "\(raw) entries of \(what()) (at least \(minimumElementBytes) bytes each)", offset: start,
                needed: raw > UInt64(Int.max) / UInt64(max(minimumElementBytes, 1))
                    ? Int.max : Int(raw) * minimumElementBytes,
                fileSize: size)
        }
        return Int(raw)
    }

    /// Checks a string at the cursor and returns its bytes, without decoding them.
    mutating func stringBytes(_ what: @autoclosure () -> String, maxBytes: Int = Int.max) throws -> UnsafeRawBufferPointer {
        let start = offset
        let raw = try read(UInt64.self, what())
        guard raw <= UInt64(size - offset) else {
            throw GGUFError.truncated(what: "\(what()) (\(raw)-byte string)", offset: start,
                                      needed: raw > UInt64(Int.max) ? Int.max : Int(raw), fileSize: size)
        }
        guard raw <= UInt64(maxBytes) else {
            throw GGUFError.invalidFile("\(what()) at offset \(start) is \(raw) bytes long (at most \(maxBytes) allowed)")
        }
        return UnsafeRawBufferPointer(start: try take(Int(raw), what()), count: Int(raw))
    }

    mutating func string(_ what: @autoclosure () -> String, maxBytes: Int = Int.max) throws -> String {
        String(decoding: try stringBytes(what(), maxBytes: maxBytes), as: UTF8.self)
    }

    /// Checks the encoding of a value of type `type` at the cursor and moves past it, building
    /// nothing (the elements of strings and arrays are skipped the same way).
    mutating func skipValue(_ type: GGUFValueType, key: String, depth: Int) throws {
        if let fixed = type.fixedSize {
            let p = try take(fixed, "metadata \(quoted(key))")
            if type == .bool, p.load(as: UInt8.self) > 1 {
                throw GGUFError.invalidFile("metadata \(quoted(key)) is a bool of value \(p.load(as: UInt8.self))")
            }
        } else if type == .string {
            _ = try stringBytes("metadata \(quoted(key))")
        } else {
            _ = try array(key: key, depth: depth)
        }
    }

    mutating func value(rawType: UInt32, key: String, depth: Int) throws -> GGUFValue {
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw GGUFError.invalidFile("metadata \(quoted(key)) has unknown value type \(rawType)")
        }
        if type == .array { return .array(try array(key: key, depth: depth)) }
        if type == .string { return .string(try string("metadata \(quoted(key))")) }
        let p = try take(type.fixedSize ?? 0, "metadata \(quoted(key))")
        if type == .bool, p.load(as: UInt8.self) > 1 {
            throw GGUFError.invalidFile("metadata \(quoted(key)) is a bool of value \(p.load(as: UInt8.self))")
        }
        return GGUFArray.decodeFixed(type, at: p)
    }

    /// An array at the cursor (element type, count, elements), checked element by element but not
    /// materialised: see ``GGUFArray``.
    mutating func array(key: String, depth: Int) throws -> GGUFArray {
        guard depth < Self.maxDepth else {
            throw GGUFError.invalidFile("metadata \(quoted(key)) nests arrays deeper than \(Self.maxDepth)")
        }
        let rawElement = try read(UInt32.self, "element type of metadata \(quoted(key))")
        guard let elementType = GGUFValueType(rawValue: rawElement) else {
            throw GGUFError.invalidFile("metadata \(quoted(key)) is an array of unknown value type \(rawElement)")
        }
        // Smallest encoding of one element: its fixed size, 8 for a string (the length), 12
        // for an array (element type + count). Bounds the count by the rest of the file.
        let minimum = elementType.fixedSize ?? (elementType == .string ? 8 : 12)
        let n = try count("array metadata \(quoted(key))", minimumElementBytes: minimum)
        guard let base else {   // only an empty buffer has no base, and then n is 0
            return GGUFArray(elementType: elementType, elements: [])
        }
        if let fixed = elementType.fixedSize {
            // Fixed-size elements: one bounds check for the whole array.
            let p = try take(n * fixed, "metadata \(quoted(key))")
            if elementType == .bool,
               let bad = UnsafeRawBufferPointer(start: p, count: n).first(where: { $0 > 1 }) {
                throw GGUFError.invalidFile("metadata \(quoted(key)) holds a bool of value \(bad)")
            }
            return GGUFArray(elementType: elementType, count: n, storage: .fixed(base: p, owner: owner))
        }
        // Strings and arrays: one offset per element, the elements themselves only checked.
        var offsets: [Int] = []
        offsets.reserveCapacity(n + 1)
        for _ in 0..<n {
            offsets.append(offset)
            try skipValue(elementType, key: key, depth: depth + 1)
        }
        offsets.append(offset)
        return GGUFArray(elementType: elementType, count: n,
                         storage: .variable(base: base, offsets: offsets, depth: depth + 1, owner: owner))
    }
}
