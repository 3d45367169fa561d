/// A failure reading a GGUF file or looking something up in it.
///
/// Every read of the file is bounds-checked against its size, so a corrupt or truncated file gives
/// one of these errors, never a crash.
///
/// ```swift
/// do {
///     let file = try GGUFFile(path: "models/SmolLM2-135M-Instruct.Q4_1.gguf")
///     let layers = try file.int("llama.block_count")
/// } catch let error as GGUFError {
///     print(error)   // e.g. "GGUF file is truncated: ... needs 8 bytes at offset 4096 of a 4100-byte file"
/// }
/// ```
public enum GGUFError: Error, Hashable, Sendable, CustomStringConvertible {
    /// No file at that path.
    case fileNotFound(path: String)
    /// The file exists but cannot be opened, inspected or mapped (permissions, a directory, ...).
    case unreadable(path: String, reason: String)
    /// A read of `what` needs `needed` bytes at `offset`, past the end of a `fileSize`-byte file.
    case truncated(what: String, offset: Int, needed: Int, fileSize: Int)
    /// The first four bytes are not "GGUF" (`found` is them read as a little-endian UInt32).
    case badMagic(found: UInt32)
    /// The GGUF version is not 3 (the only one this reader supports).
    case unsupportedVersion(UInt32)
    /// The file is malformed in a way the other cases do not name: an unknown metadata value
    /// type, arrays nested too deeply, a duplicate key or tensor name, a tensor with too many or
    /// negative dimensions, or a size that overflows.
    case invalidFile(String)
    /// A tensor has a type this reader cannot size (unknown ggml type code), or an operation
    /// (such as dequantization) is asked of a type it does not support.
    case unsupportedTensorType(tensor: String, type: UInt32)
    /// No tensor with that name.
    case missingTensor(String)
    /// No metadata key with that name.
    case missingKey(String)
    /// The metadata value of `key` is not of the kind the accessor returns.
    case metadataType(key: String, expected: String, found: String)
    /// `general.alignment` is not a power of two, or a tensor's offset is not a multiple of the
    /// alignment.
    case badAlignment(String)
    /// A tensor's data does not lie inside the file, or its row index is out of range.
    case tensorOutOfRange(tensor: String, detail: String)

    /// Strings from the file (keys, tensor names, string values) are quoted in messages with at
    /// most this many characters, then "…": a crafted file can make them hundreds of megabytes long.
    public static let quoteLimit = 64

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "GGUF file not found: \(path)"
        case .unreadable(let path, let reason):
            return "GGUF file cannot be read: \(path): \(reason)"
        case .truncated(let what, let offset, let needed, let fileSize):
            return "GGUF file is truncated: \(what) needs \(needed) bytes at offset \(offset) of a "
                + "\(fileSize)-byte file"
        case .badMagic(let found):
            let bytes = (0..<4).map { UInt8(truncatingIfNeeded: found >> (8 * $0)) }
            let shown = bytes.map { (0x20..<0x7f).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
            return "not a GGUF file: magic is \"\(shown)\" (0x\(String(found, radix: 16))), expected \"GGUF\""
        case .unsupportedVersion(let version):
            return "unsupported GGUF version \(version) (only version 3 is supported)"
        case .invalidFile(let detail):
            return "malformed GGUF file: \(detail)"
        case .unsupportedTensorType(let tensor, let type):
            return "tensor \(quoted(tensor)) has unsupported ggml type \(type)"
                + (GGUFTensorType(rawValue: type).map { " (\($0.name))" } ?? "")
        case .missingTensor(let name):
            return "GGUF file has no tensor named \(quoted(name))"
        case .missingKey(let key):
            return "GGUF file has no metadata key \(quoted(key))"
        case .metadataType(let key, let expected, let found):
            return "GGUF metadata \(quoted(key)) is \(found), expected \(expected)"
        case .badAlignment(let detail):
            return "bad GGUF alignment: \(detail)"
        case .tensorOutOfRange(let tensor, let detail):
            return "tensor \(quoted(tensor)) is out of range: \(detail)"
        }
    }
}
