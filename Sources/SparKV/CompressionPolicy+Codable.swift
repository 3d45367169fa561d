// Stable, readable JSON for policies. Keys are the C field names; enums are lower-case words;
// nil is written as null ("use the default"). Missing keys decode to the default, so a policy
// file may list only what it changes:
//
//   {"key_prune_ratio": 0.8, "selection": {"mode": "topk"}, "recovery": "mean", "sign_bits": true,
//    "key_precision": "f16", "value_precision": "f16", "window": 32, "seed": 0, "threads": null,
//    "attention_scale": null}
//
// Ranges are not checked while decoding (some depend on the head dimension): call
// validate(headDim:) or create a cache.

extension CompressionPolicy: Codable {
    enum CodingKeys: String, CodingKey {
        case keyPruneRatio = "key_prune_ratio"
        case selection
        case recovery
        case signBits = "sign_bits"
        case keyPrecision = "key_precision"
        case valuePrecision = "value_precision"
        case window
        case seed
        case threads
        case attentionScale = "attention_scale"
    }

    /// Decodes a policy; absent keys take their default value.
    ///
    /// ```swift
    /// let json = #"{"key_prune_ratio": 0.5, "recovery": "gaussian"}"#
    /// let policy = try JSONDecoder().decode(CompressionPolicy.self, from: Data(json.utf8))
    /// ```
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = CompressionPolicy()
        self.init(
            keyPruneRatio: try c.decodeIfPresent(Float.self, forKey: .keyPruneRatio) ?? d.keyPruneRatio,
            selection: try c.decodeIfPresent(Selection.self, forKey: .selection) ?? d.selection,
            recovery: try c.decodeIfPresent(Recovery.self, forKey: .recovery) ?? d.recovery,
            signBits: try c.decodeIfPresent(Bool.self, forKey: .signBits) ?? d.signBits,
            keyPrecision: try c.decodeIfPresent(Precision.self, forKey: .keyPrecision) ?? d.keyPrecision,
            valuePrecision: try c.decodeIfPresent(Precision.self, forKey: .valuePrecision) ?? d.valuePrecision,
            window: try c.decodeIfPresent(Int.self, forKey: .window) ?? d.window,
            seed: try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed,
            threads: try c.decodeIfPresent(Int.self, forKey: .threads),
            attentionScale: try c.decodeIfPresent(Float.self, forKey: .attentionScale))
    }

    /// Encodes every field (nil as null) under the C field names.
    ///
    /// ```swift
    /// let encoder = JSONEncoder()
    /// encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    /// print(String(decoding: try encoder.encode(CompressionPolicy.spark(ratio: 0.8)), as: UTF8.self))
    /// ```
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(keyPruneRatio, forKey: .keyPruneRatio)
        try c.encode(selection, forKey: .selection)
        try c.encode(recovery, forKey: .recovery)
        try c.encode(signBits, forKey: .signBits)
        try c.encode(keyPrecision, forKey: .keyPrecision)
        try c.encode(valuePrecision, forKey: .valuePrecision)
        try c.encode(window, forKey: .window)
        try c.encode(seed, forKey: .seed)
        if let threads { try c.encode(threads, forKey: .threads) } else { try c.encodeNil(forKey: .threads) }
        if let attentionScale {
            try c.encode(attentionScale, forKey: .attentionScale)
        } else {
            try c.encodeNil(forKey: .attentionScale)
        }
    }
}

/// JSON form: `{"mode": "topk"}` or `{"mode": "cumulative", "p": 0.9, "min_keep": 1, "max_keep": null}`.
extension CompressionPolicy.Selection: Codable {
    enum CodingKeys: String, CodingKey {
        case mode
        case p
        case minKeep = "min_keep"
        case maxKeep = "max_keep"
    }

    /// Decodes `{"mode": "topk"}` or `{"mode": "cumulative", "p": ..., "min_keep": ..., "max_keep": ...}`
    /// (`p` defaults to 0.9, `min_keep` to 1, `max_keep` to null = the head dimension).
    ///
    /// ```swift
    /// let s = try JSONDecoder().decode(CompressionPolicy.Selection.self, from: Data(#"{"mode":"topk"}"#.utf8))
    /// ```
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let mode = try c.decode(String.self, forKey: .mode)
        switch mode {
        case "topk":
            self = .topK
        case "cumulative":
            self = .cumulative(p: try c.decodeIfPresent(Float.self, forKey: .p) ?? 0.9,
                               minKeep: try c.decodeIfPresent(Int.self, forKey: .minKeep) ?? 1,
                               maxKeep: try c.decodeIfPresent(Int.self, forKey: .maxKeep))
        default:
            throw DecodingError.dataCorruptedError(forKey: .mode, in: c,
                                                   debugDescription: "selection mode \"\(mode)\" is not \"topk\" or \"cumulative\"")
        }
    }

    /// Encodes the mode and, for cumulative selection, all three parameters (max_keep may be null).
    ///
    /// ```swift
    /// let data = try JSONEncoder().encode(CompressionPolicy.Selection.cumulative(p: 0.9, minKeep: 1, maxKeep: nil))
    /// ```
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .topK:
            try c.encode("topk", forKey: .mode)
        case .cumulative(let p, let minKeep, let maxKeep):
            try c.encode("cumulative", forKey: .mode)
            try c.encode(p, forKey: .p)
            try c.encode(minKeep, forKey: .minKeep)
            if let maxKeep { try c.encode(maxKeep, forKey: .maxKeep) } else { try c.encodeNil(forKey: .maxKeep) }
        }
    }
}
