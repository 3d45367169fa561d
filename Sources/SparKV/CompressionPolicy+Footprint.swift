// The storage cost a policy implies, from the formulas of the header's memory report. These are
// predictions computed in Swift, independent of the C library, so they can check its report.

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

extension CompressionPolicy {
    /// Bytes of key storage (kept values plus mask, sign bits and statistics) of one prompt
    /// token of one KV head, or nil for cumulative selection (the kept count varies per token).
    /// Dense keys cost `headDim * keyPrecision.byteCount`.
    ///
    /// `T * kb + D/8 (mask) + D/8 (signs, if signBits) + 2 * statisticCount`.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.8).promptKeyBytesPerToken(headDim: 128) // 26*2 + 16 + 16 + 2 = 86
    /// CompressionPolicy.dense.promptKeyBytesPerToken(headDim: 128)             // 256
    /// ```
    public func promptKeyBytesPerToken(headDim: Int) -> Int? {
        if case .cumulative = selection { return nil }
        let kb = keyPrecision.byteCount
        guard prunes(headDim: headDim) else { return headDim * kb }
        return keptChannels(headDim: headDim) * kb + headDim / 8 * (signBits ? 2 : 1) + 2 * recovery.statisticCount
    }

    /// Per-KV-head metadata of a pruned layer: the window query norms and their mean,
    /// `headDim * 4 + 4` bytes, or 0 when the policy stores keys dense.
    ///
    /// ```swift
    /// CompressionPolicy.spark(ratio: 0.5).headMetadataBytes(headDim: 128) // 516
    /// ```
    public func headMetadataBytes(headDim: Int) -> Int {
        prunes(headDim: headDim) ? headDim * 4 + 4 : 0
    }
}
