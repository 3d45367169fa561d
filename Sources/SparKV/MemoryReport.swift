import CSparKV

/// Exact bytes a cache (or one of its layers) holds, as reported by the library.
///
/// "Used" bytes (``keyBytes`` + ``keyMetaBytes`` + ``valueBytes`` + ``valueMetaBytes`` =
/// ``totalBytes``) count stored tokens and per-head metadata; ``reservedBytes`` counts everything
/// allocated, page slack included. ``denseBytes`` is what the tokens the layers have seen (evicted
/// ones included) would take as dense fp16 K and V.
///
/// ```swift
/// let report = try cache.memoryReport()
/// print("\(report.totalBytes) bytes, \(report.ratioToDense * 100)% of dense fp16")
/// ```
public struct MemoryReport: Hashable, Codable, Sendable {
    /// Tokens held per KV head, summed over the layers covered (each layer's
    /// ``KVCache/tokenCount(layer:)``): after eviction, the survivors only.
    ///
    /// ```swift
    /// let evicted = report.denseBytes / (4 * kvHeads * headDim) - report.tokenCount
    /// ```
    public var tokenCount: Int
    /// Kept key values of compressed tokens plus dense keys of appended (or unpruned) tokens.
    ///
    /// ```swift
    /// let keyShare = Double(report.keyBytes + report.keyMetaBytes) / Double(report.totalBytes)
    /// ```
    public var keyBytes: Int
    /// Channel masks, sign bits and recovery statistics, plus per-head window query norms (SparK),
    /// or one channel mask per head (ThinK).
    ///
    /// ```swift
    /// print("key metadata: \(report.keyMetaBytes) bytes")
    /// ```
    public var keyMetaBytes: Int
    /// Values (the kept ones when value-channel pruning is on).
    ///
    /// ```swift
    /// print("values: \(report.valueBytes) bytes")
    /// ```
    public var valueBytes: Int
    /// Value-pruning masks and fill values: `headDim / 8 + 2` bytes per pruned prompt token and
    /// KV head, 0 without value pruning.
    ///
    /// ```swift
    /// let valueCost = report.valueBytes + report.valueMetaBytes
    /// ```
    public var valueMetaBytes: Int
    /// `keyBytes + keyMetaBytes + valueBytes + valueMetaBytes`.
    ///
    /// ```swift
    /// print("\(report.totalBytes) bytes used")
    /// ```
    public var totalBytes: Int
    /// The tokens seen (whole prompts, evicted ones included, plus appended ones) as dense fp16 K
    /// and V: `tokens * kvHeads * headDim * 2 * 2`.
    ///
    /// ```swift
    /// let saved = report.denseBytes - report.totalBytes
    /// ```
    public var denseBytes: Int
    /// Bytes allocated for token storage and metadata (at least ``totalBytes``).
    ///
    /// ```swift
    /// let slack = report.reservedBytes - report.totalBytes
    /// ```
    public var reservedBytes: Int

    /// Creates a report from its fields (mostly useful to tests and decoders).
    ///
    /// ```swift
    /// let empty = MemoryReport(tokenCount: 0, keyBytes: 0, keyMetaBytes: 0, valueBytes: 0,
    ///                          totalBytes: 0, denseBytes: 0, reservedBytes: 0)
    /// ```
    public init(tokenCount: Int, keyBytes: Int, keyMetaBytes: Int, valueBytes: Int, valueMetaBytes: Int = 0,
                totalBytes: Int, denseBytes: Int, reservedBytes: Int) {
        self.tokenCount = tokenCount
        self.keyBytes = keyBytes
        self.keyMetaBytes = keyMetaBytes
        self.valueBytes = valueBytes
        self.valueMetaBytes = valueMetaBytes
        self.totalBytes = totalBytes
        self.denseBytes = denseBytes
        self.reservedBytes = reservedBytes
    }

    init(_ m: sparkv_memory) {
        self.init(tokenCount: Int(clamping: m.n_tokens), keyBytes: Int(clamping: m.key_bytes),
                  keyMetaBytes: Int(clamping: m.key_meta_bytes), valueBytes: Int(clamping: m.value_bytes),
                  valueMetaBytes: Int(clamping: m.value_meta_bytes), totalBytes: Int(clamping: m.total_bytes), denseBytes: Int(clamping: m.dense_bytes),
                  reservedBytes: Int(clamping: m.reserved_bytes))
    }

    /// ``totalBytes`` / ``denseBytes``: 1 for a dense fp16 cache, about 0.67 for SparK at r = 0.8
    /// with fp16 values. 0 when nothing is stored.
    ///
    /// ```swift
    /// let saved = 1 - (try cache.memoryReport()).ratioToDense
    /// ```
    public var ratioToDense: Double {
        denseBytes > 0 ? Double(totalBytes) / Double(denseBytes) : 0
    }

    /// Decodes a report; a missing `value_meta_bytes` (JSON written before value pruning existed)
    /// decodes as 0.
    ///
    /// ```swift
    /// let report = try JSONDecoder().decode(MemoryReport.self, from: data)
    /// ```
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(tokenCount: try c.decode(Int.self, forKey: .tokenCount),
                  keyBytes: try c.decode(Int.self, forKey: .keyBytes),
                  keyMetaBytes: try c.decode(Int.self, forKey: .keyMetaBytes),
                  valueBytes: try c.decode(Int.self, forKey: .valueBytes),
                  valueMetaBytes: try c.decodeIfPresent(Int.self, forKey: .valueMetaBytes) ?? 0,
                  totalBytes: try c.decode(Int.self, forKey: .totalBytes),
                  denseBytes: try c.decode(Int.self, forKey: .denseBytes),
                  reservedBytes: try c.decode(Int.self, forKey: .reservedBytes))
    }

    enum CodingKeys: String, CodingKey {
        case tokenCount = "n_tokens"
        case keyBytes = "key_bytes"
        case keyMetaBytes = "key_meta_bytes"
        case valueBytes = "value_bytes"
        case valueMetaBytes = "value_meta_bytes"
        case totalBytes = "total_bytes"
        case denseBytes = "dense_bytes"
        case reservedBytes = "reserved_bytes"
    }
}
