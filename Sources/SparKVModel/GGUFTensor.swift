/// A ggml tensor type (the numbers are ggml's `ggml_type` codes as stored in GGUF).
///
/// Every case here can be sized (block length and bytes per block), so a file holding any of them
/// opens and its tensors can be located; only ``isDequantizable`` types (F32, F16, Q8_0, Q4_1,
/// Q5_0, Q4_K, Q6_K) can be turned into floats by ``GGUFTensor/dequantizeRow(_:)``. A type code not listed here makes
/// ``GGUFFile/init(path:)`` throw ``GGUFError/unsupportedTensorType(tensor:type:)``.
///
/// ```swift
/// GGUFTensorType.q4_1.blockLength   // 32 values per block
/// GGUFTensorType.q4_1.blockBytes    // 20 bytes: fp16 d, fp16 m, 16 bytes of nibbles
/// ```
public enum GGUFTensorType: UInt32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, bf16 = 30

    /// ggml's name of the type ("F32", "Q4_1", ...).
    public var name: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q8_1: return "Q8_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .q8_K: return "Q8_K"
        case .i8: return "I8"
        case .i16: return "I16"
        case .i32: return "I32"
        case .i64: return "I64"
        case .f64: return "F64"
        case .bf16: return "BF16"
        }
    }

    public var description: String { name }

    /// Values per block (1 for plain element types). A row's length must be a multiple of it.
    public var blockLength: Int {
        switch self {
        case .f32, .f16, .i8, .i16, .i32, .i64, .f64, .bf16: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K: return 256
        }
    }

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8: return 1
        case .i64, .f64: return 8
        case .q4_0: return 18   // fp16 d + 16 bytes of nibbles
        case .q4_1: return 20   // fp16 d, fp16 m + 16 bytes of nibbles
        case .q5_0: return 22   // fp16 d + 4 bytes of high bits + 16 bytes of nibbles
        case .q5_1: return 24   // fp16 d, fp16 m + 4 + 16
        case .q8_0: return 34   // fp16 d + 32 int8
        case .q8_1: return 36   // fp16 d, fp16 s + 32 int8
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        case .q8_K: return 292
        }
    }

    /// Whether ``GGUFTensor/dequantizeRow(_:)`` supports the type: F32, F16, Q8_0, Q4_1, Q5_0, Q4_K
    /// and Q6_K (the types the model kernels read).
    public var isDequantizable: Bool {
        switch self {
        case .f32, .f16, .q8_0, .q4_1, .q5_0, .q4_K, .q6_K: return true
        default: return false
        }
    }

    /// Bytes taken by `count` values (a multiple of ``blockLength``), nil if that overflows.
    public func byteCount(values count: Int) -> Int? {
        guard count >= 0, count % blockLength == 0 else { return nil }
        let (bytes, overflow) = (count / blockLength).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }

    /// Decodes `count` values (a multiple of ``blockLength``) stored in this type at `source` into
    /// `destination`. The reference the C kernels are tested against:
    ///
    /// - F32: copied; F16: IEEE half to float.
    /// - Q8_0, per block of 32: fp16 `d`, then 32 int8 `q`; value `j` = `d * q[j]`.
    /// - Q4_1, per block of 32: fp16 `d`, fp16 `m`, then 16 bytes; byte `j` holds value `j` in its
    ///   low nibble and value `j + 16` in its high nibble; value = `d * q + m` (in float, no FMA).
    /// - Q5_0, per block of 32: fp16 `d`, a little-endian UInt32 `qh` whose bit `j` is bit 4 of
    ///   `q[j]`, then 16 bytes holding the low 4 bits as in Q4_1; value = `d * (q - 16)`.
    /// - Q4_K, per super-block of 256 = 8 sub-blocks of 32: fp16 `d`, fp16 `dmin`, 12 bytes of
    ///   6-bit scales and mins (see ``q4KScaleMin(_:_:)``), 128 bytes: sub-blocks `2i` and `2i+1`
    ///   are the low and high nibbles of bytes `32i..<32i+32`; value = `(d * sc) * q - dmin * m`.
    /// - Q6_K, per super-block of 256: `ql[128]`, `qh[64]`, int8 `scales[16]`, fp16 `d`; value
    ///   `v = 128h + 32k + l` has its low 4 bits in `ql[64h + 32(k % 2) + l]` (low nibble for
    ///   `k < 2`, high for `k >= 2`) and its top 2 bits in bits `2k, 2k+1` of `qh[32h + l]`;
    ///   value = `(d * scales[v / 16]) * (q - 32)`.
    ///
    /// These are the C kernels' definitions too (`sparkv_model.h`), computed with the same float
    /// operations, so both give identical floats.
    ///
    /// ```swift
    /// var row = [Float](repeating: 0, count: tensor.rowLength)
    /// try row.withUnsafeMutableBufferPointer {
    ///     try tensor.type.dequantize(tensor.data, count: tensor.rowLength, into: $0.baseAddress!)
    /// }
    /// ```
    public func dequantize(_ source: UnsafeRawPointer, count: Int,
                           into destination: UnsafeMutablePointer<Float>) throws {
        guard isDequantizable else {
            throw GGUFError.unsupportedTensorType(tensor: "(dequantize)", type: rawValue)
        }
        guard count >= 0, count % blockLength == 0 else {
            throw GGUFError.invalidFile("\(count) values are not a whole number of \(name) blocks of \(blockLength)")
        }
        switch self {
        case .f32:
            for i in 0..<count {
                destination[i] = Float(bitPattern: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
            }
        case .f16:
            for i in 0..<count {
                destination[i] = halfToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .q8_0:
            for block in 0..<(count / 32) {
                let base = source + block * 34
                let d = halfToFloat(base.loadUnaligned(as: UInt16.self))
                let out = destination + block * 32
                for j in 0..<32 {
                    out[j] = Float(Int8(bitPattern: base.load(fromByteOffset: 2 + j, as: UInt8.self))) * d
                }
            }
        case .q4_1:
            for block in 0..<(count / 32) {
                let base = source + block * 20
                let d = halfToFloat(base.loadUnaligned(as: UInt16.self))
                let m = halfToFloat(base.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                let out = destination + block * 32
                for j in 0..<16 {
                    let byte = base.load(fromByteOffset: 4 + j, as: UInt8.self)
                    out[j] = Float(byte & 0x0f) * d + m
                    out[j + 16] = Float(byte >> 4) * d + m
                }
            }
        case .q5_0:
            for block in 0..<(count / 32) {
                let base = source + block * 22
                let d = halfToFloat(base.loadUnaligned(as: UInt16.self))
                let qh = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
                let out = destination + block * 32
                for j in 0..<16 {
                    let byte = base.load(fromByteOffset: 6 + j, as: UInt8.self)
                    let q0 = Int(byte & 0x0f) | Int((qh >> UInt32(j)) & 1) << 4
                    let q1 = Int(byte >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
                    out[j] = d * Float(q0 - 16)
                    out[j + 16] = d * Float(q1 - 16)
                }
            }
        case .q4_K:
            for block in 0..<(count / 256) {
                let base = source + block * 144
                let d = halfToFloat(base.loadUnaligned(as: UInt16.self))
                let dmin = halfToFloat(base.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                let scales = UnsafeRawBufferPointer(start: base + 4, count: 12)
                for j in 0..<8 {
                    let (sc, m) = Self.q4KScaleMin(j, scales)
                    let ds = d * Float(sc), mo = dmin * Float(m)
                    let out = destination + block * 256 + 32 * j
                    for l in 0..<32 {
                        let byte = base.load(fromByteOffset: 16 + 32 * (j / 2) + l, as: UInt8.self)
                        out[l] = ds * Float(j % 2 == 0 ? byte & 0x0f : byte >> 4) - mo
                    }
                }
            }
        case .q6_K:
            for block in 0..<(count / 256) {
                let base = source + block * 210
                let d = halfToFloat(base.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
                let out = destination + block * 256
                for v in 0..<256 {
                    let h = v / 128, k = (v / 32) % 4, l = v % 32
                    let ql = base.load(fromByteOffset: 64 * h + 32 * (k % 2) + l, as: UInt8.self)
                    let qh = base.load(fromByteOffset: 128 + 32 * h + l, as: UInt8.self)
                    let q = Int(k < 2 ? ql & 0x0f : ql >> 4) | Int((qh >> UInt8(2 * k)) & 3) << 4
                    let scale = Int8(bitPattern: base.load(fromByteOffset: 192 + v / 16, as: UInt8.self))
                    out[v] = (d * Float(scale)) * Float(q - 32)
                }
            }
        default:
            throw GGUFError.unsupportedTensorType(tensor: "(dequantize)", type: rawValue)
        }
    }

    /// Q4_K's 6-bit scale and min of sub-block `j` (0..<8) from the 12 packed bytes: bytes 0-3 hold
    /// scales 0-3 in their low 6 bits and bytes 4-7 mins 0-3; sub-blocks 4-7 take their low 4 bits
    /// from the nibbles of bytes 8-11 (scale low, min high) and their top 2 bits from the spare top
    /// bits of bytes 0-3 (scales) and 4-7 (mins).
    static func q4KScaleMin(_ j: Int, _ s: UnsafeRawBufferPointer) -> (scale: Int, min: Int) {
        if j < 4 { return (Int(s[j] & 63), Int(s[j + 4] & 63)) }
        return (Int(s[j + 4] & 0x0f) | Int(s[j - 4] >> 6) << 4, Int(s[j + 4] >> 4) | Int(s[j] >> 6) << 4)
    }
}

/// IEEE-754 half precision (as stored in GGUF) to float, exactly; subnormals, infinities and NaN
/// included.
@inline(__always)
func halfToFloat(_ bits: UInt16) -> Float {
    let sign = UInt32(bits & 0x8000) << 16
    let exponent = UInt32(bits >> 10) & 0x1f
    let mantissa = UInt32(bits & 0x03ff)
    if exponent == 0 {
        // Zero or subnormal: mantissa * 2^-24, exact in float.
        let magnitude = Float(mantissa) * 0x1p-24
        return sign != 0 ? -magnitude : magnitude
    }
    if exponent == 0x1f {
        return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13))
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// One tensor of a ``GGUFFile``: its description and a pointer to its bytes inside the file's
/// memory mapping.
///
/// The shape is in GGUF (ggml) order: `shape[0]` is the fastest-moving dimension, the length of
/// one row; a 2-D weight of `shape == [576, 1536]` has 1536 rows of 576 values. The pointer stays
/// valid as long as the ``GGUFFile`` or any tensor taken from it lives (the tensor keeps the
/// mapping alive). The bytes are read-only.
///
/// ```swift
/// let file = try GGUFFile(path: path)
/// let embedding = try file.tensor(named: "token_embd.weight")
/// print(embedding.type, embedding.shape)   // Q8_0 [576, 49152]
/// let row = try embedding.dequantizeRow(42)  // the 576 floats of token 42's embedding
/// ```
public struct GGUFTensor: @unchecked Sendable, CustomStringConvertible {
    /// The tensor's name, e.g. "blk.0.attn_q.weight".
    public let name: String
    /// The element type.
    public let type: GGUFTensorType
    /// Dimensions in GGUF order (`shape[0]` fastest), 1 to 4 of them.
    public let shape: [Int]
    /// Offset of the data from the start of the file's data section (a multiple of the alignment).
    public let offset: Int
    /// Bytes of data: `elementCount / type.blockLength * type.blockBytes`.
    public let byteCount: Int
    /// The first byte of the data inside the memory mapping (read-only).
    public let data: UnsafeRawPointer
    /// Keeps the mapping (and so `data`) alive.
    let owner: GGUFMapping

    /// Number of values: the product of the dimensions.
    public var elementCount: Int { shape.reduce(1, *) }
    /// Values per row: `shape[0]`.
    public var rowLength: Int { shape.first ?? 1 }
    /// Number of rows: the product of the dimensions after the first.
    public var rowCount: Int { shape.dropFirst().reduce(1, *) }
    /// Bytes per row.
    public var rowByteCount: Int { rowLength / type.blockLength * type.blockBytes }

    /// A pointer to the first byte of row `row`.
    ///
    /// ```swift
    /// let q = try file.tensor(named: "blk.0.attn_q.weight")
    /// let row7 = try q.rowPointer(7)   // q.rowByteCount bytes of Q4_1 blocks
    /// ```
    public func rowPointer(_ row: Int) throws -> UnsafeRawPointer {
        guard row >= 0, row < rowCount else {
            throw GGUFError.tensorOutOfRange(tensor: name, detail: "row \(row) is not in 0..<\(rowCount)")
        }
        return data + row * rowByteCount
    }

    /// The values of row `row` as floats (see ``GGUFTensorType/dequantize(_:count:into:)``).
    ///
    /// ```swift
    /// let norm = try file.tensor(named: "output_norm.weight").dequantizeRow(0)   // 576 floats
    /// ```
    public func dequantizeRow(_ row: Int) throws -> [Float] {
        // Row first: a tensor with a zero dimension holds no bytes yet may claim a huge row length,
        // which must not become an allocation.
        _ = try rowPointer(row)
        var out = [Float](repeating: 0, count: rowLength)
        try out.withUnsafeMutableBufferPointer { try dequantizeRow(row, into: $0) }
        return out
    }

    /// Writes the values of row `row` into `destination`, which must hold at least ``rowLength``
    /// floats.
    public func dequantizeRow(_ row: Int, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard type.isDequantizable else {
            throw GGUFError.unsupportedTensorType(tensor: name, type: type.rawValue)
        }
        guard destination.count >= rowLength, let base = destination.baseAddress else {
            if rowLength == 0 { return }
            throw GGUFError.tensorOutOfRange(
                tensor: name, detail: "destination holds \(destination.count) floats, a row has \(rowLength)")
        }
        try type.dequantize(rowPointer(row), count: rowLength, into: base)
    }

    /// All values of the tensor as floats, row after row.
    public func dequantized() throws -> [Float] {
        guard type.isDequantizable else {
            throw GGUFError.unsupportedTensorType(tensor: name, type: type.rawValue)
        }
        var out = [Float](repeating: 0, count: elementCount)
        if elementCount > 0 {
            try out.withUnsafeMutableBufferPointer { try type.dequantize(data, count: elementCount, into: $0.baseAddress!) }
        }
        return out
    }

    /// The data of an F32 tensor in place (no copy), valid while the tensor or its file lives.
    ///
    /// ```swift
    /// let norm = try file.tensor(named: "blk.0.attn_norm.weight").floats()   // 576 floats
    /// ```
    public func floats() throws -> UnsafeBufferPointer<Float> {
        guard type == .f32 else {
            throw GGUFError.unsupportedTensorType(tensor: name, type: type.rawValue)
        }
        guard Int(bitPattern: data) % MemoryLayout<Float>.alignment == 0 else {
            throw GGUFError.badAlignment("F32 tensor \"\(name)\" data is not 4-byte aligned")
        }
        return UnsafeBufferPointer(start: data.assumingMemoryBound(to: Float.self), count: elementCount)
    }

    public var description: String {
        "\(name) \(type) \(shape) (\(byteCount) bytes at data offset \(offset))"
    }
}
