// Stable, readable JSON for policies. Keys are the C field names; enums are lower-case words;
// nil is written as null ("use the default" / "off"). Missing keys decode to the default, so a
// policy file may list only what it changes, and JSON written before a field existed still
// decodes (to that field's default):
//
//   {"eviction": {"mode": "snapkv", "budget": 512, "pool_kernel": 5}, "key_pruning": "spark",
//    "key_prune_ratio": 0.8, "selection": {"mode": "topk"}, "recovery": "mean", "sign_bits": true,
//    "value_prune_ratio": 0, "key_precision": "f16", "value_precision": "f16", "window": 32,
//    "seed": 0, "threads": null, "attention_scale": null, "quant_group": 32}
//
// Precisions are "f32", "f16", "bf16", "i8", "i4"; "quant_group" (channels per fp16 scale of
// i8/i4 rows stored whole) decodes to 32 when absent.
//
// Ranges are not checked while decoding (some depend on the head dimension): call
// validate(headDim:) or create a cache.

extension CompressionPolicy: Codable {
    enum CodingKeys: String, CodingKey {
        case eviction
        case keyPruning = "key_pruning"
        case keyPruneRatio = "key_prune_ratio"
        case valuePruneRatio = "value_prune_ratio"
        case selection
        case recovery
        case signBits = "sign_bits"
        case keyPrecision = "key_precision"
        case valuePrecision = "value_precision"
        case window
        case seed
        case threads
        case attentionScale = "attention_scale"
        case quantGroup = "quant_group"
        case compressDecode = "compress_decode"
        case decodeRecent = "decode_recent"
    }

    /// Decodes a policy; absent keys take their default value.
    ///
    /// ```swift
    /// let json = #"{"eviction": {"mode": "streaming", "sink_tokens": 4, "recent_tokens": 1020},"#
    ///     + #" "key_prune_ratio": 0.5, "recovery": "gaussian"}"#
    /// let policy = try JSONDecoder().decode(CompressionPolicy.self, from: Data(json.utf8))
    /// ```
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = CompressionPolicy()
        self.init(
            eviction: try c.decodeIfPresent(Eviction.self, forKey: .eviction),
            keyPruning: try c.decodeIfPresent(KeyPruning.self, forKey: .keyPruning) ?? d.keyPruning,
            keyPruneRatio: try c.decodeIfPresent(Float.self, forKey: .keyPruneRatio) ?? d.keyPruneRatio,
            selection: try c.decodeIfPresent(Selection.self, forKey: .selection) ?? d.selection,
            recovery: try c.decodeIfPresent(Recovery.self, forKey: .recovery) ?? d.recovery,
            signBits: try c.decodeIfPresent(Bool.self, forKey: .signBits) ?? d.signBits,
            valuePruneRatio: try c.decodeIfPresent(Float.self, forKey: .valuePruneRatio) ?? d.valuePruneRatio,
            keyPrecision: try c.decodeIfPresent(Precision.self, forKey: .keyPrecision) ?? d.keyPrecision,
            valuePrecision: try c.decodeIfPresent(Precision.self, forKey: .valuePrecision) ?? d.valuePrecision,
            window: try c.decodeIfPresent(Int.self, forKey: .window) ?? d.window,
            seed: try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed,
            threads: try c.decodeIfPresent(Int.self, forKey: .threads),
            attentionScale: try c.decodeIfPresent(Float.self, forKey: .attentionScale),
            quantGroup: try c.decodeIfPresent(Int.self, forKey: .quantGroup) ?? d.quantGroup,
            decodeCompression: try c.decodeIfPresent(Bool.self, forKey: .compressDecode) == true
                ? DecodeCompression(recent: try c.decodeIfPresent(Int.self, forKey: .decodeRecent) ?? 32) : nil)
    }

    /// Encodes every field (nil as null) under the C field names; no eviction is `"eviction": null`.
    ///
    /// ```swift
    /// let encoder = JSONEncoder()
    /// encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    /// print(String(decoding: try encoder.encode(CompressionPolicy.spark(ratio: 0.8)), as: UTF8.self))
    /// ```
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if let eviction { try c.encode(eviction, forKey: .eviction) } else { try c.encodeNil(forKey: .eviction) }
        try c.encode(keyPruning, forKey: .keyPruning)
        try c.encode(keyPruneRatio, forKey: .keyPruneRatio)
        try c.encode(selection, forKey: .selection)
        try c.encode(recovery, forKey: .recovery)
        try c.encode(signBits, forKey: .signBits)
        try c.encode(valuePruneRatio, forKey: .valuePruneRatio)
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
        try c.encode(quantGroup, forKey: .quantGroup)
        try c.encode(decodeCompression != nil, forKey: .compressDecode)
        try c.encode(decodeCompression?.recent ?? 32, forKey: .decodeRecent)
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

/// JSON form: `{"mode": "snapkv", "budget": 512, "pool_kernel": 5}`,
/// `{"mode": "pyramidkv", "mean_budget": 512, "ratio": 4, "pool_kernel": 5}` or
/// `{"mode": "streaming", "sink_tokens": 4, "recent_tokens": 508}`.
extension CompressionPolicy.Eviction: Codable {
    enum CodingKeys: String, CodingKey {
        case mode
        case budget
        case meanBudget = "mean_budget"
        case ratio
        case poolKernel = "pool_kernel"
        case sinkTokens = "sink_tokens"
        case recentTokens = "recent_tokens"
    }

    /// Decodes an eviction object; absent parameters take the C defaults (budget 512, pool 5,
    /// ratio 4, 4 sinks, 508 recent tokens).
    ///
    /// ```swift
    /// let json = #"{"mode": "pyramidkv", "mean_budget": 256}"#
    /// let e = try JSONDecoder().decode(CompressionPolicy.Eviction.self, from: Data(json.utf8))
    /// // .pyramidKV(meanBudget: 256, ratio: 4, poolKernel: 5)
    /// ```
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let mode = try c.decode(String.self, forKey: .mode)
        let pool = try c.decodeIfPresent(Int.self, forKey: .poolKernel) ?? 5
        switch mode {
        case "snapkv":
            self = .snapKV(budget: try c.decodeIfPresent(Int.self, forKey: .budget) ?? 512, poolKernel: pool)
        case "pyramidkv":
            self = .pyramidKV(meanBudget: try c.decodeIfPresent(Int.self, forKey: .meanBudget) ?? 512,
                              ratio: try c.decodeIfPresent(Float.self, forKey: .ratio) ?? 4, poolKernel: pool)
        case "streaming":
            self = .streamingLLM(sinks: try c.decodeIfPresent(Int.self, forKey: .sinkTokens) ?? 4,
                                 recent: try c.decodeIfPresent(Int.self, forKey: .recentTokens) ?? 508)
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .mode, in: c,
                debugDescription: "eviction mode \"\(mode)\" is not \"snapkv\", \"pyramidkv\" or \"streaming\" (no eviction is null)")
        }
    }

    /// Encodes the mode and all of its parameters.
    ///
    /// ```swift
    /// let data = try JSONEncoder().encode(CompressionPolicy.Eviction.snapKV(budget: 512))
    /// // {"budget":512,"mode":"snapkv","pool_kernel":5}
    /// ```
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .snapKV(let budget, let poolKernel):
            try c.encode("snapkv", forKey: .mode)
            try c.encode(budget, forKey: .budget)
            try c.encode(poolKernel, forKey: .poolKernel)
        case .pyramidKV(let meanBudget, let ratio, let poolKernel):
            try c.encode("pyramidkv", forKey: .mode)
            try c.encode(meanBudget, forKey: .meanBudget)
            try c.encode(ratio, forKey: .ratio)
            try c.encode(poolKernel, forKey: .poolKernel)
        case .streamingLLM(let sinks, let recent):
            try c.encode("streaming", forKey: .mode)
            try c.encode(sinks, forKey: .sinkTokens)
            try c.encode(recent, forKey: .recentTokens)
        }
    }
}
