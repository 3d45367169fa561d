import CSparKV

/// A failure reported by SparKV: one case per C status code, each carrying the detail sentence
/// the library wrote for that failure (from `sparkv_last_error`), or a sentence written by the
/// Swift layer when it rejected the call before reaching C.
///
/// A call that throws leaves the cache exactly as it was.
///
/// ```swift
/// do {
///     try CompressionPolicy.spark(ratio: 1.5).validate(headDim: 128)
/// } catch let error as SparKVError {
///     print(error.status)       // 5
///     print(error.detail)       // key_prune_ratio 1.5 is outside [0, 1)
///     print(error)              // <status sentence>: <detail>
/// }
/// ```
public enum SparKVError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A required pointer was NULL (status 1). Swift callers should never see this.
    case nullPointer(String)
    /// A size is zero or sizes are inconsistent, including buffers whose element count does not
    /// match the shape (status 2).
    case invalidShape(String)
    /// `headDim` is not a multiple of 8 in 8...256 (status 3).
    case headDim(String)
    /// `queryHeads` is not a multiple of `kvHeads` (status 4).
    case gqa(String)
    /// A policy field is out of range or the combination is invalid (status 5).
    case invalidPolicy(String)
    /// An input tensor contains NaN or infinity (status 6).
    case nonFinite(String)
    /// Layer index out of range (status 7).
    case layer(String)
    /// The layer's token capacity would be exceeded (status 8).
    case capacity(String)
    /// The call is not allowed in the layer's state, e.g. a second prefill (status 9).
    case state(String)
    /// The observation window is empty or longer than the prompt (status 10).
    case window(String)
    /// An allocation failed (status 11).
    case outOfMemory(String)
    /// The requested kernel is not supported by this CPU or build (status 12).
    case unsupported(String)
    /// Attention on a layer that holds no token (status 13).
    case empty(String)
    /// A `struct_size` field is not one the library knows (status 14).
    case structSize(String)
    /// A head or token index is out of range (status 15).
    case index(String)
    /// A finite input is beyond what its storage precision holds, e.g. a key of 70000 stored as
    /// f16, or a recovery statistic would exceed fp16 (status 16).
    case range(String)
    /// Attention overflowed float32: a score `scale * q.k` or an output is not finite although
    /// every input is (status 17). The output was not written.
    case overflow(String)
    /// An input element type is not float32, float16 or bfloat16 (status 18). The Swift API's
    /// ``KVElement`` types rule this out; it comes only from a newer or misused C layer.
    case elementType(String)
    /// A saved cache is malformed (status 19): truncated, corrupt (a section's checksum fails), not a
    /// SparKV file, another format version, or contents the library could not have written.
    case format(String)
    /// A file cannot be opened, read, written or renamed (status 20).
    case io(String)
    /// A status code this version of the Swift layer does not know (a newer C library).
    case unknown(status: Int32, String)

    /// The C status code (`sparkv_status`) of this error.
    ///
    /// ```swift
    /// SparKVError.invalidShape("keys hold 3 floats").status // 2
    /// ```
    public var status: Int32 {
        switch self {
        case .nullPointer: return 1
        case .invalidShape: return 2
        case .headDim: return 3
        case .gqa: return 4
        case .invalidPolicy: return 5
        case .nonFinite: return 6
        case .layer: return 7
        case .capacity: return 8
        case .state: return 9
        case .window: return 10
        case .outOfMemory: return 11
        case .unsupported: return 12
        case .empty: return 13
        case .structSize: return 14
        case .index: return 15
        case .range: return 16
        case .overflow: return 17
        case .elementType: return 18
        case .format: return 19
        case .io: return 20
        case .unknown(let status, _): return status
        }
    }

    /// The detail of this particular failure ("keys contain NaN at head 2, token 117, channel 5").
    ///
    /// ```swift
    /// SparKVError.layer("layer 9 is out of range").detail // "layer 9 is out of range"
    /// ```
    public var detail: String {
        switch self {
        case .nullPointer(let d), .invalidShape(let d), .headDim(let d), .gqa(let d), .invalidPolicy(let d),
             .nonFinite(let d), .layer(let d), .capacity(let d), .state(let d), .window(let d),
             .outOfMemory(let d), .unsupported(let d), .empty(let d), .structSize(let d), .index(let d),
             .range(let d), .overflow(let d), .elementType(let d), .format(let d), .io(let d), .unknown(_, let d):
            return d
        }
    }

    /// The library's stable sentence for ``status`` (`sparkv_status_string`).
    ///
    /// ```swift
    /// SparKVError.empty("").statusSentence // "the layer holds no token"
    /// ```
    public var statusSentence: String {
        String(cString: sparkv_status_string(sparkv_status(rawValue: UInt32(bitPattern: status))))
    }

    /// The status sentence followed by the detail, e.g.
    /// "the compression policy has a value out of range or an invalid combination: key_prune_ratio 1.5 is outside [0, 1)".
    ///
    /// ```swift
    /// print(SparKVError.capacity("append: layer 0 is full (capacity 8 tokens)"))
    /// ```
    public var description: String {
        detail.isEmpty ? statusSentence : "\(statusSentence): \(detail)"
    }

    /// The error for a C status, or nil for `SPARKV_OK`.
    init?(status: sparkv_status, detail: String) {
        switch status.rawValue {
        case 0: return nil
        case 1: self = .nullPointer(detail)
        case 2: self = .invalidShape(detail)
        case 3: self = .headDim(detail)
        case 4: self = .gqa(detail)
        case 5: self = .invalidPolicy(detail)
        case 6: self = .nonFinite(detail)
        case 7: self = .layer(detail)
        case 8: self = .capacity(detail)
        case 9: self = .state(detail)
        case 10: self = .window(detail)
        case 11: self = .outOfMemory(detail)
        case 12: self = .unsupported(detail)
        case 13: self = .empty(detail)
        case 14: self = .structSize(detail)
        case 15: self = .index(detail)
        case 16: self = .range(detail)
        case 17: self = .overflow(detail)
        case 18: self = .elementType(detail)
        case 19: self = .format(detail)
        case 20: self = .io(detail)
        default: self = .unknown(status: Int32(bitPattern: status.rawValue), detail)
        }
    }

    /// Throws the error for `status` unless it is `SPARKV_OK`. `detail` is only evaluated on failure.
    static func check(_ status: sparkv_status, detail: @autoclosure () -> String) throws {
        if status == SPARKV_OK { return }
        let text = detail()
        throw SparKVError(status: status, detail: text) ?? .unknown(status: 0, text)
    }
}
