import Foundation
import Testing

@testable import SparKVModel

/// The real model, opened once for all suites (nil when it has not been fetched).
///
/// The tests that need it FAIL, never skip, when it is missing: a suite that quietly skips would
/// let CI pass without ever running the model (scripts/test.sh fetches it first).
enum SmolLM2Fixture {
    static let path: String? = ModelFiles.find()
    static let missingMessage: Comment = """
        SmolLM2 model not found (\(ModelFiles.smolLM2FileName)): run scripts/fetch-model.sh (scripts/test.sh does), \
        or set SPARKV_MODEL to the file
        """
    static let opened: Result<GGUFFile, any Error>? = path.map { path in Result { try GGUFFile(path: path) } }
    static var file: GGUFFile? { try? opened?.get() }

    /// The model's path; fails the calling test with ``missingMessage`` when it is not fetched.
    static func requirePath(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try #require(path, missingMessage, sourceLocation: sourceLocation)
    }

    /// The opened model file; fails the calling test when it is missing or does not open.
    static func requireFile(sourceLocation: SourceLocation = #_sourceLocation) throws -> GGUFFile {
        try #require(opened, missingMessage, sourceLocation: sourceLocation).get()
    }
}

/// Runs `body` and returns the error of type `E` it throws; records an issue if it throws
/// something else or nothing.
func thrownError<E: Error>(_ type: E.Type, _ body: () throws -> Void,
                           sourceLocation: SourceLocation = #_sourceLocation) -> E? {
    do {
        try body()
        Issue.record("expected a \(E.self), nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as E {
        return error
    } catch {
        Issue.record("expected a \(E.self), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// The GGUFError `body` throws (see ``thrownError(_:_:sourceLocation:)``).
func ggufError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> GGUFError? {
    thrownError(GGUFError.self, body, sourceLocation: sourceLocation)
}

// MARK: - Independent decoding, written for clarity (not speed) from the ggml block layouts

enum ScalarDecode {
    static func half(_ bytes: UnsafeRawBufferPointer, _ at: Int) -> Float {
        Float(Float16(bitPattern: UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8))
    }

    /// Q8_0: blocks of 34 bytes = fp16 scale d, then 32 signed bytes q; value = q * d.
    static func q8_0(_ bytes: UnsafeRawBufferPointer, count: Int) -> [Float] {
        var out: [Float] = []
        for block in 0..<(count / 32) {
            let base = block * 34
            let d = half(bytes, base)
            for j in 0..<32 { out.append(Float(Int8(bitPattern: bytes[base + 2 + j])) * d) }
        }
        return out
    }

    /// Q4_1: blocks of 20 bytes = fp16 d, fp16 m, 16 bytes; element j < 16 is the low nibble of
    /// byte j, element j >= 16 the high nibble of byte j - 16; value = q * d + m.
    static func q4_1(_ bytes: UnsafeRawBufferPointer, count: Int) -> [Float] {
        var out: [Float] = []
        for block in 0..<(count / 32) {
            let base = block * 20
            let d = half(bytes, base), m = half(bytes, base + 2)
            for j in 0..<32 {
                let byte = bytes[base + 4 + j % 16]
                let q = j < 16 ? byte & 0x0f : byte >> 4
                out.append(Float(q) * d + m)
            }
        }
        return out
    }

    static func row(_ tensor: GGUFTensor, _ row: Int) -> [Float] {
        let bytes = UnsafeRawBufferPointer(start: tensor.data + row * tensor.rowByteCount, count: tensor.rowByteCount)
        switch tensor.type {
        case .q8_0: return q8_0(bytes, count: tensor.rowLength)
        case .q4_1: return q4_1(bytes, count: tensor.rowLength)
        case .f32: return (0..<tensor.rowLength).map { bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
        case .f16: return (0..<tensor.rowLength).map { half(bytes, 2 * $0) }
        default: return []
        }
    }
}

// MARK: - A GGUF writer for synthetic files

/// Writes GGUF files byte by byte, with knobs to corrupt them.
struct GGUFBuilder {
    struct Tensor {
        var name: String
        var dims: [UInt64]
        var type: UInt32
        var data: [UInt8]
        /// Overrides the computed offset.
        var offset: UInt64? = nil
    }

    var magic: [UInt8] = Array("GGUF".utf8)
    var version: UInt32 = 3
    var metadata: [(String, GGUFValue)] = []
    /// Replaces a value's type code on the wire (to write an unknown type).
    var rawTypeOverride: [String: UInt32] = [:]
    var tensors: [Tensor] = []
    var alignment = 32

    /// The file, the offset where the tensor infos end and the data section's start.
    func build() -> (bytes: [UInt8], headerEnd: Int, dataStart: Int) {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func value(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .uint32(let x): u32(x)
            case .int32(let x): u32(UInt32(bitPattern: x))
            case .float32(let x): u32(x.bitPattern)
            case .bool(let x): out.append(x ? 1 : 0)
            case .string(let x): string(x)
            case .uint64(let x): u64(x)
            case .int64(let x): u64(UInt64(bitPattern: x))
            case .float64(let x): u64(x.bitPattern)
            case .array(let a):
                u32(a.elementType.rawValue)
                u64(UInt64(a.count))
                a.forEach(value)
            }
        }
        out.append(contentsOf: magic)
        u32(version)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, v) in metadata {
            string(key)
            u32(rawTypeOverride[key] ?? v.type.rawValue)
            value(v)
        }
        var offsets: [UInt64] = []
        var next: UInt64 = 0
        for t in tensors {
            offsets.append(t.offset ?? next)
            next += UInt64(t.data.count)
            next = (next + UInt64(alignment) - 1) / UInt64(alignment) * UInt64(alignment)
        }
        for (t, offset) in zip(tensors, offsets) {
            string(t.name)
            u32(UInt32(t.dims.count))
            t.dims.forEach(u64)
            u32(t.type)
            u64(offset)
        }
        let headerEnd = out.count
        while out.count % alignment != 0 { out.append(0) }
        let dataStart = out.count
        for (t, offset) in zip(tensors, offsets) where t.offset == nil {
            while out.count < dataStart + Int(offset) { out.append(0) }
            out.append(contentsOf: t.data)
        }
        return (out, headerEnd, dataStart)
    }

    /// Writes `bytes` to a fresh temporary file, opens it and removes the file.
    static func open(_ bytes: [UInt8]) throws -> GGUFFile {
        let path = NSTemporaryDirectory() + "sparkv-gguf-test-\(UUID().uuidString).gguf"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try GGUFFile(path: path)
    }

    func open() throws -> GGUFFile { try Self.open(build().bytes) }

    static func fp16(_ x: Float) -> [UInt8] {
        let bits = Float16(x).bitPattern
        return [UInt8(bits & 0xff), UInt8(bits >> 8)]
    }

    /// A small file with every metadata type and one tensor of each supported type.
    static func sample() -> GGUFBuilder {
        var b = GGUFBuilder()
        b.metadata = [
            ("general.architecture", .string("llama")),
            ("t.u8", .uint8(200)), ("t.i8", .int8(-100)), ("t.u16", .uint16(60000)), ("t.i16", .int16(-30000)),
            ("t.u32", .uint32(4_000_000_000)), ("t.i32", .int32(-2_000_000_000)), ("t.f32", .float32(1e-5)),
            ("t.bool", .bool(true)), ("t.string", .string("héllo ✓")), ("t.u64", .uint64(1 << 40)),
            ("t.i64", .int64(-(1 << 40))), ("t.f64", .float64(0.1)),
            ("t.ints", .array(elementType: .int32, elements: [.int32(1), .int32(-2), .int32(3)])),
            ("t.strings", .array(elementType: .string, elements: [.string("a"), .string(""), .string("<|im_end|>")])),
            ("t.nested", .array(elementType: .array, elements: [
                .array(elementType: .string, elements: [.string("x"), .string("y")]),
                .array(elementType: .string, elements: []),
            ])),
            ("t.empty", .array(elementType: .float32, elements: [])),
        ]
        // F32 [4, 2]: 0..7
        let f32 = (0..<8).flatMap { i -> [UInt8] in withUnsafeBytes(of: Float(i).bitPattern.littleEndian) { Array($0) } }
        // F16 [4]: 1, -2, 0.5, 65504
        let f16 = [Float(1), -2, 0.5, 65504].flatMap(fp16)
        // Q8_0 [32, 2]: row 0 d = 0.5, q = j - 16; row 1 d = -0.25, q = 127 - j
        var q8: [UInt8] = fp16(0.5) + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
        q8 += fp16(-0.25) + (0..<32).map { UInt8(bitPattern: Int8(127 - $0)) }
        // Q4_1 [64]: block 0 d = 0.5, m = -1, low nibble j, high nibble 15 - j; block 1 d = 2, m = 3, all 0xf0
        var q4: [UInt8] = fp16(0.5) + fp16(-1) + (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        q4 += fp16(2) + fp16(3) + [UInt8](repeating: 0xf0, count: 16)
        b.tensors = [
            Tensor(name: "f32", dims: [4, 2], type: 0, data: f32),
            Tensor(name: "f16", dims: [4], type: 1, data: f16),
            Tensor(name: "q8_0", dims: [32, 2], type: 8, data: q8),
            Tensor(name: "q4_1", dims: [64], type: 3, data: q4),
        ]
        return b
    }
}

// MARK: - Synthetic files: parsing and corruption

@Suite("GGUF reader: synthetic files")
struct GGUFSyntheticTests {
    @Test func everyMetadataTypeIsReadBack() throws {
        let file = try GGUFBuilder.sample().open()
        #expect(file.version == 3)
        #expect(file.alignment == 32)
        #expect(file.metadataKeys.first == "general.architecture")
        #expect(file.metadataKeys.count == 17)
        #expect(try file.string("general.architecture") == "llama")
        #expect(file.metadata["t.u8"] == .uint8(200))
        #expect(file.metadata["t.i8"]?.int == -100)
        #expect(file.metadata["t.u16"]?.int == 60000)
        #expect(file.metadata["t.i16"]?.int == -30000)
        #expect(try file.int("t.u32") == 4_000_000_000)
        #expect(try file.int("t.i32") == -2_000_000_000)
        #expect(try file.float("t.f32") == Float(1e-5))
        #expect(try file.double("t.f32") == Double(Float(1e-5)))
        #expect(try file.bool("t.bool"))
        #expect(try file.string("t.string") == "héllo ✓")
        #expect(try file.int("t.u64") == 1 << 40)
        #expect(try file.int("t.i64") == -(1 << 40))
        #expect(try file.double("t.f64") == 0.1)
        #expect(try file.intArray("t.ints") == [1, -2, 3])
        #expect(try file.stringArray("t.strings") == ["a", "", "<|im_end|>"])
        #expect(file.metadata["t.nested"]?.array?.map { $0.stringArray } == [["x", "y"], []])
        #expect(file.metadata["t.empty"] == .array(elementType: .float32, elements: []))
        #expect(file.metadata["t.empty"]?.doubleArray == [])
    }

    @Test func typedAccessorsReportMissingKeysAndWrongTypes() throws {
        let file = try GGUFBuilder.sample().open()
        #expect(ggufError { _ = try file.int("no.such.key") } == .missingKey("no.such.key"))
        #expect(ggufError { _ = try file.int("t.string") } == .metadataType(key: "t.string", expected: "an integer", found: "string"))
        #expect(ggufError { _ = try file.string("t.u8") } == .metadataType(key: "t.u8", expected: "a string", found: "uint8"))
        #expect(ggufError { _ = try file.stringArray("t.ints") } == .metadataType(key: "t.ints", expected: "an array of strings", found: "an array of int32"))
        #expect(ggufError { _ = try file.bool("t.u8") } != nil)
        #expect(ggufError { _ = try file.tensor(named: "nope") } == .missingTensor("nope"))
    }

    @Test func tensorsAreLocatedAndDequantized() throws {
        let built = GGUFBuilder.sample().build()
        let file = try GGUFBuilder.open(built.bytes)
        #expect(file.dataOffset == built.dataStart)
        #expect(file.tensorNames == ["f32", "f16", "q8_0", "q4_1"])

        let f32 = try file.tensor(named: "f32")
        #expect(f32.type == .f32 && f32.shape == [4, 2] && f32.rowLength == 4 && f32.rowCount == 2)
        #expect(f32.byteCount == 32 && f32.offset == 0)
        #expect(try f32.dequantizeRow(1) == [4, 5, 6, 7])
        #expect(Array(try f32.floats()) == [0, 1, 2, 3, 4, 5, 6, 7])

        let f16 = try file.tensor(named: "f16")
        #expect(try f16.dequantizeRow(0) == [1, -2, 0.5, 65504])
        #expect(f16.offset == 32)   // 32 bytes of f32, aligned to 32

        let q8 = try file.tensor(named: "q8_0")
        #expect(q8.byteCount == 68 && q8.rowByteCount == 34)
        #expect(try q8.dequantizeRow(0) == (0..<32).map { Float($0 - 16) * 0.5 })
        #expect(try q8.dequantizeRow(1) == (0..<32).map { Float(127 - $0) * -0.25 })

        let q4 = try file.tensor(named: "q4_1")
        let expected = (0..<16).map { Float($0) * 0.5 - 1 } + (0..<16).map { Float(15 - $0) * 0.5 - 1 }
            + [Float](repeating: 3, count: 16) + [Float](repeating: 15 * 2 + 3, count: 16)
        #expect(try q4.dequantizeRow(0) == expected)
        #expect(try q4.dequantized() == expected)

        #expect(ggufError { _ = try q4.dequantizeRow(1) } == .tensorOutOfRange(tensor: "q4_1", detail: "row 1 is not in 0..<1"))
        #expect(ggufError { _ = try q4.floats() } == .unsupportedTensorType(tensor: "q4_1", type: 3))
    }

    @Test func customAlignmentIsHonoured() throws {
        var b = GGUFBuilder.sample()
        b.alignment = 64
        b.metadata.append(("general.alignment", .uint32(64)))
        let built = b.build()
        let file = try GGUFBuilder.open(built.bytes)
        #expect(file.alignment == 64)
        #expect(file.dataOffset % 64 == 0 && file.dataOffset == built.dataStart)
        #expect(try file.tensor(named: "f16").offset == 64)
        #expect(try file.tensor(named: "f16").dequantizeRow(0) == [1, -2, 0.5, 65504])
    }

    @Test func knownButUnsupportedTypesOpenButDoNotDequantize() throws {
        var b = GGUFBuilder.sample()
        b.tensors.append(.init(name: "q4_0", dims: [32], type: 2, data: [UInt8](repeating: 0, count: 18)))
        let file = try b.open()
        let t = try file.tensor(named: "q4_0")
        #expect(t.type == .q4_0 && t.byteCount == 18)
        #expect(ggufError { _ = try t.dequantizeRow(0) } == .unsupportedTensorType(tensor: "q4_0", type: 2))
    }

    @Test func truncationAtEveryOffsetIsReportedNeverCrashes() throws {
        let built = GGUFBuilder.sample().build()
        for length in 0..<built.bytes.count {
            let error = ggufError { _ = try GGUFBuilder.open(Array(built.bytes[..<length])) }
            if length < built.headerEnd {
                guard case .truncated = error else {
                    Issue.record("cut at \(length) (header ends at \(built.headerEnd)): \(String(describing: error))")
                    continue
                }
            } else {
                guard case .tensorOutOfRange = error else {
                    Issue.record("cut at \(length) (in the data section): \(String(describing: error))")
                    continue
                }
            }
        }
    }

    @Test func badMagicIsReported() throws {
        var b = GGUFBuilder.sample()
        b.magic = Array("GGUX".utf8)
        #expect(ggufError { _ = try b.open() } == .badMagic(found: 0x5855_4747))
        #expect(ggufError { _ = try GGUFBuilder.open(Array("not a model at all".utf8)) } == .badMagic(found: 0x2074_6f6e))
    }

    @Test(arguments: [UInt32(1), 2, 4, 0x0300_0000])
    func versionsOtherThanThreeAreRejected(version: UInt32) throws {
        var b = GGUFBuilder.sample()
        b.version = version
        #expect(ggufError { _ = try b.open() } == .unsupportedVersion(version))
    }

    @Test func unknownTensorTypeIsReported() throws {
        var b = GGUFBuilder.sample()
        b.tensors[2].type = 99
        #expect(ggufError { _ = try b.open() } == .unsupportedTensorType(tensor: "q8_0", type: 99))
        b.tensors[2].type = 4   // a removed ggml type (Q4_2)
        #expect(ggufError { _ = try b.open() } == .unsupportedTensorType(tensor: "q8_0", type: 4))
    }

    @Test func tensorDataBeyondTheFileIsReported() throws {
        var b = GGUFBuilder.sample()
        b.tensors[3].offset = 1 << 20
        guard case .tensorOutOfRange(let name, _) = ggufError({ _ = try b.open() }) else {
            Issue.record("expected tensorOutOfRange"); return
        }
        #expect(name == "q4_1")
        b.tensors[3].offset = UInt64.max - 31   // aligned, overflows when added
        guard case .tensorOutOfRange = ggufError({ _ = try b.open() }) else { Issue.record("expected tensorOutOfRange"); return }
    }

    @Test func badAlignmentIsReported() throws {
        var b = GGUFBuilder.sample()
        b.tensors[1].offset = 16   // not a multiple of 32
        guard case .badAlignment = ggufError({ _ = try b.open() }) else { Issue.record("expected badAlignment"); return }
        for bad: GGUFValue in [.uint32(3), .uint32(0), .string("32"), .uint64(32)] {
            var c = GGUFBuilder.sample()
            c.metadata.append(("general.alignment", bad))
            guard case .badAlignment = ggufError({ _ = try c.open() }) else {
                Issue.record("general.alignment = \(bad) was accepted"); continue
            }
        }
    }

    @Test func malformedStructuresAreReported() throws {
        func expectInvalid(_ b: GGUFBuilder, _ what: Comment) {
            guard case .invalidFile = ggufError({ _ = try b.open() }) else { Issue.record(what); return }
        }
        var b = GGUFBuilder.sample()
        b.rawTypeOverride["t.u8"] = 13
        expectInvalid(b, "unknown value type")

        b = GGUFBuilder.sample()
        b.metadata.append(("t.u8", .uint8(1)))
        expectInvalid(b, "duplicate key")

        b = GGUFBuilder.sample()
        b.tensors.append(b.tensors[0])
        expectInvalid(b, "duplicate tensor")

        b = GGUFBuilder.sample()
        b.tensors[0].dims = [1, 1, 1, 1, 8]
        expectInvalid(b, "five dimensions")

        b = GGUFBuilder.sample()
        b.tensors[2].dims = [33, 2]
        expectInvalid(b, "Q8_0 row of 33")

        b = GGUFBuilder.sample()
        b.tensors[0].dims = [UInt64(Int64.max), 4]
        expectInvalid(b, "huge dimension")

        b = GGUFBuilder.sample()
        var deep = GGUFValue.array(elementType: .string, elements: [.string("bottom")])
        for _ in 0..<100 { deep = .array(elementType: .array, elements: [deep]) }
        b.metadata.append(("t.deep", deep))
        expectInvalid(b, "arrays nested 100 deep")

        b = GGUFBuilder.sample()
        b.metadata.append(("t.bool2", .uint8(7)))
        b.rawTypeOverride["t.bool2"] = GGUFValueType.bool.rawValue
        expectInvalid(b, "bool of value 7")
    }

    @Test func hugeCountsAndLengthsAreTruncationsNotAllocations() throws {
        // An array claiming 2^60 elements and a string claiming 2^62 bytes, each followed by a few bytes.
        var header: [UInt8] = Array("GGUF".utf8) + [3, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0] + [1, 0, 0, 0, 0, 0, 0, 0]
        let key: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0, 0x6b]   // "k"
        let array = header + key + [9, 0, 0, 0] + [4, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0x10] + [1, 2, 3, 4]
        guard case .truncated = ggufError({ _ = try GGUFBuilder.open(array) }) else { Issue.record("array"); return }
        let string = header + key + [8, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0x40] + [1, 2, 3, 4]
        guard case .truncated = ggufError({ _ = try GGUFBuilder.open(string) }) else { Issue.record("string"); return }
        // 2^40 metadata entries, 2^40 tensors.
        header = Array("GGUF".utf8) + [3, 0, 0, 0] + [0, 0, 0, 0, 0, 1, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0]
        guard case .truncated = ggufError({ _ = try GGUFBuilder.open(header) }) else { Issue.record("tensors"); return }
    }

    @Test func randomCorruptionNeverCrashes() throws {
        let original = GGUFBuilder.sample().build().bytes
        var state: UInt64 = 0x5eed
        func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        var opened = 0, rejected = 0
        for _ in 0..<400 {
            var bytes = original
            for _ in 0..<(1 + Int(next() % 4)) {
                let at = Int(next() % UInt64(bytes.count))
                bytes[at] = next() % 2 == 0 ? UInt8(truncatingIfNeeded: next()) : 0xff
            }
            do {
                let file = try GGUFBuilder.open(bytes)
                opened += 1
                for tensor in file.tensors where tensor.type.isDequantizable {
                    for row in 0..<tensor.rowCount { _ = try tensor.dequantizeRow(row) }
                }
            } catch is GGUFError {
                rejected += 1
            }
        }
        #expect(opened + rejected == 400)
        #expect(rejected > 0)
    }

    @Test func missingEmptyAndDirectoryPathsAreReported() throws {
        #expect(ggufError { _ = try GGUFFile(path: "/nonexistent/model.gguf") } == .fileNotFound(path: "/nonexistent/model.gguf"))
        guard case .unreadable = ggufError({ _ = try GGUFFile(path: NSTemporaryDirectory()) }) else {
            Issue.record("a directory was accepted"); return
        }
        guard case .truncated(_, 0, 4, 0) = ggufError({ _ = try GGUFBuilder.open([]) }) else {
            Issue.record("an empty file was accepted"); return
        }
    }

    @Test func errorsDescribeThemselves() {
        #expect(GGUFError.badMagic(found: 0x5855_4747).description.contains("\"GGUX\""))
        #expect(GGUFError.unsupportedTensorType(tensor: "w", type: 2).description.contains("Q4_0"))
        #expect(GGUFError.truncated(what: "tensor name", offset: 10, needed: 8, fileSize: 12).description
            == "GGUF file is truncated: tensor name needs 8 bytes at offset 10 of a 12-byte file")
    }

    @Test func halfPrecisionDecodesExactly() {
        for bits in stride(from: 0, through: 0xffff, by: 1) {
            let h = UInt16(bits)
            let expected = Float(Float16(bitPattern: h))
            let got = halfToFloat(h)
            if expected.isNaN { #expect(got.isNaN) } else if got.bitPattern != expected.bitPattern {
                Issue.record("fp16 0x\(String(h, radix: 16)): \(got) != \(expected)")
                return
            }
        }
    }
}

// MARK: - The real model

@Suite("GGUF reader: SmolLM2-135M-Instruct")
struct GGUFSmolLM2Tests {
    var file: GGUFFile { get throws { try SmolLM2Fixture.requireFile() } }

    @Test func headerAndHyperparameters() throws {
        let file = try file
        #expect(file.version == 3)
        #expect(file.fileSize == 98_362_432)
        #expect(file.metadataKeys.count == 33)
        #expect(file.tensors.count == 272)
        #expect(file.alignment == 32)
        #expect(file.dataOffset == 1_785_664)
        #expect(try file.string("general.architecture") == "llama")
        #expect(try file.int("llama.block_count") == 30)
        #expect(try file.int("llama.embedding_length") == 576)
        #expect(try file.int("llama.feed_forward_length") == 1536)
        #expect(try file.int("llama.attention.head_count") == 9)
        #expect(try file.int("llama.attention.head_count_kv") == 3)
        #expect(try file.int("llama.rope.dimension_count") == 64)
        #expect(try file.int("llama.context_length") == 8192)
        #expect(try file.int("llama.vocab_size") == 49152)
        #expect(try file.double("llama.rope.freq_base") == 100_000)
        #expect(try file.float("llama.attention.layer_norm_rms_epsilon") == Float(1e-5))
        #expect(try file.int("general.file_type") == 3)   // mostly Q4_1
        #expect(file.metadata["llama.block_count"]?.int == 30)
        #expect(file.metadata["general.languages"]?.stringArray == ["en"])
        #expect(try file.string("tokenizer.ggml.model") == "gpt2")
        #expect(try file.string("tokenizer.ggml.pre") == "smollm")
        #expect(try file.stringArray("tokenizer.ggml.tokens").count == 49152)
        #expect(try file.stringArray("tokenizer.ggml.merges").count == 48900)
        #expect(try file.intArray("tokenizer.ggml.token_type").count == 49152)
        #expect(file.metadata["tokenizer.ggml.token_type"]?.array?.first?.type == .int32)
        #expect(try file.bool("tokenizer.ggml.add_bos_token") == false)
        #expect(try file.string("tokenizer.chat_template").hasPrefix("{% for message in messages %}"))
    }

    @Test func tensorListTypesAndShapes() throws {
        let file = try file
        var counts: [GGUFTensorType: Int] = [:]
        for t in file.tensors { counts[t.type, default: 0] += 1 }
        #expect(counts == [.q4_1: 210, .f32: 61, .q8_0: 1])

        let embedding = try file.tensor(named: "token_embd.weight")
        #expect(embedding.type == .q8_0 && embedding.shape == [576, 49152] && embedding.offset == 0)
        #expect(embedding.byteCount == 49152 * 18 * 34)
        #expect(try file.tensor(named: "output_norm.weight").shape == [576])
        #expect(!file.hasTensor(named: "output.weight"))   // tied to token_embd

        let shapes: [(String, GGUFTensorType, [Int])] = [
            ("attn_norm", .f32, [576]), ("ffn_norm", .f32, [576]),
            ("attn_q", .q4_1, [576, 576]), ("attn_k", .q4_1, [576, 192]), ("attn_v", .q4_1, [576, 192]),
            ("attn_output", .q4_1, [576, 576]),
            ("ffn_gate", .q4_1, [576, 1536]), ("ffn_up", .q4_1, [576, 1536]), ("ffn_down", .q4_1, [1536, 576]),
        ]
        for layer in 0..<30 {
            for (suffix, type, shape) in shapes {
                let t = try file.tensor(named: "blk.\(layer).\(suffix).weight")
                #expect(t.type == type && t.shape == shape, "\(t)")
                #expect(t.byteCount == t.rowCount * t.rowByteCount)
            }
        }

        // Tensors tile the data section without overlap, and the last one ends the file.
        let sorted = file.tensors.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) {
            #expect(a.offset + a.byteCount <= b.offset)
            #expect(b.offset - (a.offset + a.byteCount) < file.alignment)
        }
        #expect(file.dataOffset + sorted.last!.offset + sorted.last!.byteCount == file.fileSize)
    }

    @Test func dequantizedRowsEqualTheScalarDecodeAndAreSane() throws {
        let file = try file
        let picks: [(String, [Int])] = [
            ("token_embd.weight", [0, 1, 2, 905, 19556, 49151]),
            ("blk.0.attn_q.weight", [0, 1, 300, 575]), ("blk.0.attn_k.weight", [0, 191]),
            ("blk.0.attn_v.weight", [5]), ("blk.7.attn_output.weight", [100]),
            ("blk.15.ffn_gate.weight", [0, 1535]), ("blk.22.ffn_up.weight", [777]),
            ("blk.29.ffn_down.weight", [0, 575]),
            ("blk.3.attn_norm.weight", [0]), ("output_norm.weight", [0]),
        ]
        for (name, rows) in picks {
            let tensor = try file.tensor(named: name)
            for row in rows {
                let fast = try tensor.dequantizeRow(row)
                let slow = ScalarDecode.row(tensor, row)
                #expect(fast.count == tensor.rowLength)
                #expect(fast.map(\.bitPattern) == slow.map(\.bitPattern), "\(name) row \(row)")
                #expect(fast.allSatisfy { $0.isFinite })
                let norm = fast.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
                // Embedding rows have norms of 2-4, weight rows 4-10, norm weights ~40.
                #expect(norm > 0.5 && norm < 200, "\(name) row \(row) norm \(norm)")
                #expect(Set(fast).count > 4, "\(name) row \(row) is nearly constant")
            }
        }
    }

    @Test func dequantizedValuesMatchTheGGUFPythonPackage() throws {
        // First values of rows as decoded by the `gguf` Python package (llama.cpp's reference
        // reader, gguf 0.19: gguf.quants.dequantize), recorded once.
        let file = try file
        let reference: [(String, Int, [Float])] = [
            ("token_embd.weight", 0, [-0.10654449462890625, 0.032978057861328125, 0.048198699951171875]),
            ("token_embd.weight", 905, [0.0304412841796875, 0.13800048828125, 0.0263824462890625]),
            ("token_embd.weight", 49151, [0.011505126953125, 0.0057525634765625, 0.0977935791015625]),
            ("blk.0.attn_q.weight", 0, [-0.0963134765625, 0.1573486328125, -0.0963134765625]),
            ("blk.0.attn_k.weight", 191, [0.015869140625, -0.4342041015625, 0.015869140625]),
            ("blk.29.ffn_down.weight", 575, [-0.22918701171875, -0.03912353515625, -0.276702880859375]),
            ("output_norm.weight", 0, [1.7578125, 1.8203125, 1.78125]),
        ]
        for (name, row, values) in reference {
            let got = Array(try file.tensor(named: name).dequantizeRow(row).prefix(3))
            #expect(got == values, "\(name) row \(row)")
        }
        let q = try file.tensor(named: "blk.0.attn_q.weight").dequantizeRow(0)
        let norm = q.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
        #expect(abs(norm - 9.738219261169434) < 1e-4)
    }

    @Test func f32TensorsAreReadInPlace() throws {
        let file = try file
        let norm = try file.tensor(named: "blk.0.attn_norm.weight")
        let inPlace = try norm.floats()
        #expect(inPlace.count == 576)
        #expect(Array(inPlace) == (try norm.dequantizeRow(0)))
        #expect(UnsafeRawPointer(inPlace.baseAddress!) == norm.data)
        #expect(ggufError { _ = try file.tensor(named: "blk.0.attn_q.weight").floats() } != nil)
    }

    @Test func truncatedCopiesOfTheModelAreRejected() throws {
        let path = try SmolLM2Fixture.requirePath()
        let whole = try Data(contentsOf: URL(fileURLWithPath: path))
        // Inside the token list, the merges, the tensor infos, and the tensor data.
        for length in [1_000, 400_000, 1_200_000, 1_785_000, 1_785_664 + 100, 50_000_000, whole.count - 1] {
            let error = ggufError { _ = try GGUFBuilder.open([UInt8](whole.prefix(length))) }
            switch error {
            case .truncated: #expect(length < 1_785_664, "cut at \(length)")
            case .tensorOutOfRange: #expect(length >= 1_785_000, "cut at \(length)")
            default: Issue.record("cut at \(length): \(String(describing: error))")
            }
        }
    }
}
