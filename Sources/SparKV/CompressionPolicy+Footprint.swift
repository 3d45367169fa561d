// The storage cost a policy implies, from the formulas of the header's memory report and the
// eviction rules of sparkv_prefill. These are predictions computed in Swift, independent of the
// C library, so they can check its report.

extension CompressionPolicy.Recovery {
    /// fp16 statistics stored per compressed token: none 0, mean 1, exponential 2 (m, theta),
    /// gaussian 3 (m, theta, sd).
    ///
    /// ```swift
    /// CompressionPolicy.Recovery.gaussian.statisticCount // 3
    /// ```
    public var statisticCount: Int {
        switch self {
        case .none: return 0
        case .mean: return 1
        case .exponential: return 2
        case .gaussian: return 3
        }
    }
}

extension CompressionPolicy.Eviction {
    /// The prompt-token budget of `layer` (of `layers`) before clamping to the prompt: the budget
    /// of SnapKV; PyramidKV's `round(first + (last - first) * layer / (layers - 1))` with
    /// `last = 2 * meanBudget / (1 + ratio)` and `first = ratio * last` (the mean budget for one
    /// layer); nil for StreamingLLM, which keeps a fixed count.
    ///
    /// ```swift
    /// let e = CompressionPolicy.Eviction.pyramidKV(meanBudget: 10, ratio: 4)
    /// (0..<4).map { e.budget(layer: $0, layers: 4)! }   // [16, 12, 8, 4]
    /// ```
    public func budget(layer: Int, layers: Int) -> Int? {
        switch self {
        case .snapKV(let budget, _):
            return budget
        case .pyramidKV(let meanBudget, let ratio, _):
            guard layers > 1 else { return meanBudget }
            let last = 2 * Double(meanBudget) / (1 + Double(ratio))
            let first = Double(ratio) * last
            let b = first + (last - first) * Double(layer) / Double(layers - 1)
            return Int(b.rounded(.toNearestOrAwayFromZero))
        case .streamingLLM:
            return nil
        }
    }
}

extension CompressionPolicy {
    /// Prompt tokens `layer` keeps after eviction (per KV head), for a prompt of `promptTokens`
    /// tokens prefilled with `windowCount` window-query rows; nil when that prefill would fail
    /// (a scoring eviction without window queries, or a budget above the prompt minus the
    /// window).
    ///
    /// - SnapKV: `budget + u`, `u = min(window, windowCount)`.
    /// - PyramidKV: the layer's ``Eviction/budget(layer:layers:)`` clamped to
    ///   `1...(promptTokens - u)`, plus `u`.
    /// - StreamingLLM: `min(promptTokens, sinks + recent)`.
    ///
    /// ```swift
    /// CompressionPolicy.snapKV(budget: 512).keptPromptTokens(promptTokens: 4096, windowCount: 32,
    ///                                                        layer: 0, layers: 32)   // 544
    /// ```
    public func keptPromptTokens(promptTokens n: Int, windowCount: Int, layer: Int, layers: Int) -> Int? {
        guard let eviction else { return n }
        if case .streamingLLM(let sinks, let recent) = eviction { return min(n, sinks + recent) }
        let u = min(window, windowCount)
        guard u >= 1, u <= n, let budget = eviction.budget(layer: layer, layers: layers) else { return nil }
        let prefix = n - u
        if case .pyramidKV(let meanBudget, _, _) = eviction {
            guard meanBudget >= 1, meanBudget <= prefix else { return nil }
            return min(max(budget, 1), prefix) + u
        }
        guard budget >= 1, budget <= prefix else { return nil }
        return budget + u
    }

    /// fp16 scales of one row stored whole (dense or appended key, value without value pruning)
    /// in a quantized precision: `headDim / quantGroup` (rounded up); 0 when `precision` is not
    /// quantized.
    ///
    /// ```swift
    /// CompressionPolicy.quantized(keys: .i8, values: .i8).wholeRowScaleCount(headDim: 128, precision: .i8) // 4
    /// ```
    public func wholeRowScaleCount(headDim: Int, precision: Precision) -> Int {
        guard precision.isQuantized, quantGroup > 0 else { return 0 }
        return (headDim + quantGroup - 1) / quantGroup
    }

    /// Bytes of the stored key values of one prompt token of one KV head, scales and metadata
    /// excluded (the report's `key_bytes` per token): `rb(kp, T)` when keys are pruned (SparK or
    /// ThinK), `rb(kp, D)` when they are stored dense; nil for cumulative selection.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.8).promptKeyPayloadBytesPerToken(headDim: 128)                  // 52
    /// CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i4).promptKeyPayloadBytesPerToken(headDim: 128) // 13
    /// ```
    public func promptKeyPayloadBytesPerToken(headDim: Int) -> Int? {
        if case .cumulative = selection { return nil }
        return keyPrecision.rowBytes(prunes(headDim: headDim) ? keptChannels(headDim: headDim) : headDim)
    }

    /// Bytes of key storage (kept values plus mask, sign bits, statistics and fp16 scales) of one
    /// prompt token of one KV head, or nil for cumulative selection (the kept count varies per
    /// token). With `rb`/`sc` of ``Precision/rowBytes(_:)`` / ``Precision/scaleBytes(_:)``:
    ///
    /// SparK: `rb(kp, T) + D/8 (mask) + D/8 (signs, if signBits) + 2 * statisticCount + sc(kp, 1)`.
    /// ThinK: `rb(kp, T) + sc(kp, 1)` (its mask is per head, see ``headMetadataBytes(headDim:)``).
    /// Dense keys: `rb(kp, D) + sc(kp, D / quantGroup)`.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.8).promptKeyBytesPerToken(headDim: 128) // 26*2 + 16 + 16 + 2 = 86
    /// CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8).promptKeyBytesPerToken(headDim: 128) // 26 + 2 + 34 = 62
    /// CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i4).promptKeyBytesPerToken(headDim: 128) // 13 + 2 + 34 = 49
    /// CompressionPolicy.think(ratio: 0.5).promptKeyBytesPerToken(headDim: 128) // 128
    /// CompressionPolicy.dense.promptKeyBytesPerToken(headDim: 128)             // 256
    /// CompressionPolicy.quantized(keys: .i8, values: .i8).promptKeyBytesPerToken(headDim: 128) // 128 + 8 = 136
    /// ```
    public func promptKeyBytesPerToken(headDim: Int) -> Int? {
        guard let payload = promptKeyPayloadBytesPerToken(headDim: headDim) else { return nil }
        return payload + promptKeyMetaBytesPerToken(headDim: headDim)
    }

    /// Per-token key metadata of one prompt token of one KV head (the report's `key_meta_bytes`
    /// per token, per-head data excluded): SparK `D/8 + D/8 (signs) + 2 * statisticCount +
    /// sc(kp, 1)`, ThinK `sc(kp, 1)`, dense `sc(kp, D / quantGroup)`.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.8).withPrecision(keys: .i8).promptKeyMetaBytesPerToken(headDim: 128) // 36
    /// CompressionPolicy.quantized(keys: .i8, values: .i8).promptKeyMetaBytesPerToken(headDim: 128)         // 8
    /// ```
    public func promptKeyMetaBytesPerToken(headDim: Int) -> Int {
        guard prunes(headDim: headDim) else {
            return keyPrecision.scaleBytes(wholeRowScaleCount(headDim: headDim, precision: keyPrecision))
        }
        let scale = keyPrecision.scaleBytes(1)
        if keyPruning == .think { return scale }
        return headDim / 8 * (signBits ? 2 : 1) + 2 * recovery.statisticCount + scale
    }

    /// Bytes of one appended (decode) token's key of one KV head: `rb(kp, D)` stored values plus
    /// `sc(kp, D / quantGroup)` scales.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.8).appendedKeyBytesPerToken(headDim: 128)                        // 256
    /// CompressionPolicy.quantized(keys: .i4, values: .i4).appendedKeyBytesPerToken(headDim: 128)        // 64 + 8 = 72
    /// ```
    public func appendedKeyBytesPerToken(headDim: Int) -> Int {
        keyPrecision.rowBytes(headDim) + keyPrecision.scaleBytes(wholeRowScaleCount(headDim: headDim, precision: keyPrecision))
    }

    /// Per-KV-head key metadata of a pruned layer: SparK's window query norms and their mean,
    /// `headDim * 4 + 4` bytes; ThinK's channel mask, `headDim / 8` bytes; 0 when the policy
    /// stores keys dense.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.5).headMetadataBytes(headDim: 128) // 516
    /// CompressionPolicy.think(ratio: 0.5).headMetadataBytes(headDim: 128) // 16
    /// ```
    public func headMetadataBytes(headDim: Int) -> Int {
        guard prunes(headDim: headDim) else { return 0 }
        return keyPruning == .think ? headDim / 8 : headDim * 4 + 4
    }

    /// Bytes of stored values of one prompt token of one KV head, scales excluded:
    /// `rb(vp, T_v)` (`rb(vp, headDim)` without value pruning).
    ///
    /// ```swift
    /// CompressionPolicy.dense.withValuePruning(ratio: 0.5).promptValueBytesPerToken(headDim: 128) // 128
    /// CompressionPolicy.quantized(keys: .i8, values: .i4).promptValueBytesPerToken(headDim: 128)  // 64
    /// ```
    public func promptValueBytesPerToken(headDim: Int) -> Int {
        valuePrecision.rowBytes(keptValueChannels(headDim: headDim))
    }

    /// Value metadata of one prompt token of one KV head: with value pruning its mask, fp16 fill
    /// value and (i8/i4) one scale, `headDim / 8 + 2 + sc(vp, 1)` bytes; otherwise the scales of
    /// the whole row, `sc(vp, headDim / quantGroup)` (0 for float precisions).
    ///
    /// ```swift
    /// CompressionPolicy.dense.withValuePruning(ratio: 0.5).promptValueMetaBytesPerToken(headDim: 128) // 18
    /// CompressionPolicy.quantized(keys: .i8, values: .i8).promptValueMetaBytesPerToken(headDim: 128)  // 8
    /// ```
    public func promptValueMetaBytesPerToken(headDim: Int) -> Int {
        if prunesValues(headDim: headDim) { return headDim / 8 + 2 + valuePrecision.scaleBytes(1) }
        return appendedValueMetaBytesPerToken(headDim: headDim)
    }

    /// Bytes of one appended token's value of one KV head, scales excluded: `rb(vp, D)`.
    ///
    /// ```swift
    /// CompressionPolicy.quantized(keys: .i8, values: .i8).appendedValueBytesPerToken(headDim: 128) // 128
    /// ```
    public func appendedValueBytesPerToken(headDim: Int) -> Int { valuePrecision.rowBytes(headDim) }

    /// fp16 scales of one appended token's value of one KV head: `sc(vp, D / quantGroup)`.
    ///
    /// ```swift
    /// CompressionPolicy.quantized(keys: .i8, values: .i8).appendedValueMetaBytesPerToken(headDim: 128) // 8
    /// ```
    public func appendedValueMetaBytesPerToken(headDim: Int) -> Int {
        valuePrecision.scaleBytes(wholeRowScaleCount(headDim: headDim, precision: valuePrecision))
    }

    /// The memory report a cache of `shape` with this policy gives after every layer is
    /// prefilled with `promptTokens` tokens (`windowCount` window rows) and `appendedTokens`
    /// tokens are appended to every layer; nil for cumulative selection or when prefill would fail
    /// (see ``keptPromptTokens(promptTokens:windowCount:layer:layers:)``). `reservedBytes` (page
    /// slack) is not predicted: it is set to `totalBytes`.
    ///
    /// ```swift
    /// let shape = ModelShape.llama3_8B(capacity: 4200)
    /// let m = CompressionPolicy.snapSpark(budget: 1024, ratio: 0.8)
    ///     .predictedMemory(shape: shape, promptTokens: 4096, windowCount: 32, appendedTokens: 64)!
    /// print(m.ratioToDense)
    /// ```
    public func predictedMemory(shape: ModelShape, promptTokens: Int, windowCount: Int,
                                appendedTokens: Int = 0) -> MemoryReport? {
        let d = shape.headDim, heads = shape.kvHeads
        guard let keyPayload = promptKeyPayloadBytesPerToken(headDim: d) else { return nil }
        let keyMeta = promptKeyMetaBytesPerToken(headDim: d)
        let appendedKeyPayload = keyPrecision.rowBytes(d)
        let appendedKeyMeta = appendedKeyBytesPerToken(headDim: d) - appendedKeyPayload
        var m = MemoryReport(tokenCount: 0, keyBytes: 0, keyMetaBytes: 0, valueBytes: 0, valueMetaBytes: 0,
                             totalBytes: 0, denseBytes: 0, reservedBytes: 0)
        for layer in 0..<shape.layers {
            guard let kept = keptPromptTokens(promptTokens: promptTokens, windowCount: windowCount,
                                              layer: layer, layers: shape.layers) else { return nil }
            m.tokenCount += kept + appendedTokens
            m.keyBytes += heads * (kept * keyPayload + appendedTokens * appendedKeyPayload)
            m.keyMetaBytes += heads * (kept * keyMeta + appendedTokens * appendedKeyMeta + headMetadataBytes(headDim: d))
            m.valueBytes += heads * (kept * promptValueBytesPerToken(headDim: d)
                                     + appendedTokens * appendedValueBytesPerToken(headDim: d))
            m.valueMetaBytes += heads * (kept * promptValueMetaBytesPerToken(headDim: d)
                                         + appendedTokens * appendedValueMetaBytesPerToken(headDim: d))
            m.denseBytes += heads * (promptTokens + appendedTokens) * d * 4
        }
        m.totalBytes = m.keyBytes + m.keyMetaBytes + m.valueBytes + m.valueMetaBytes
        m.reservedBytes = m.totalBytes
        return m
    }
}
