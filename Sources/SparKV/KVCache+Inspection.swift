import CSparKV

// Read-only views of what a cache stores, for tests, debugging and export. Attention never uses
// these; they copy out one token of one head at a time.

extension KVCache {
    /// The window query norms `qn_j` of one layer and KV head and their mean `c` (the scale the
    /// recovery statistics are stored in). All zeros and 1 for a dense or not yet prefilled layer.
    ///
    /// ```swift
    /// let w = try cache.windowQueryNorms(layer: 0, kvHead: 0)
    /// let loudest = w.norms.indices.max { w.norms[$0] < w.norms[$1] }
    /// ```
    public struct WindowQueryNorms: Hashable, Codable, Sendable {
        /// `qn_j` for each of the `headDim` channels.
        public var norms: [Float]
        /// `c`, the mean of the norms (1 if they are all zero).
        public var scale: Float
    }

    /// Which channels of a stored token's key were kept (true) or pruned (false). Dense tokens
    /// (appended, or stored by a policy that does not prune) report every channel kept.
    ///
    /// - Throws: ``SparKVError/layer(_:)`` or ``SparKVError/index(_:)`` for indices out of range.
    ///
    /// ```swift
    /// let kept = try cache.keptMask(layer: 0, kvHead: 3, token: 100).filter { $0 }.count // 26 at r = 0.8
    /// ```
    public func keptMask(layer: Int, kvHead: Int, token: Int) throws -> [Bool] {
        let (l, h, t) = try tokenAddress(layer, kvHead, token, "keptMask")
        let d = shape.headDim
        var bytes = [UInt8](repeating: 0, count: d / 8)
        try check(sparkv_inspect_key(handle, l, h, t, &bytes, nil))
        return (0..<d).map { bytes[$0 >> 3] & (1 << UInt8($0 & 7)) != 0 }
    }

    /// A stored token's key as attention sees it: kept values as stored (after rounding to the
    /// key precision), pruned entries recovered per the policy.
    ///
    /// ```swift
    /// let k = try cache.recoveredKey(layer: 0, kvHead: 0, token: 0)   // headDim floats
    /// ```
    public func recoveredKey(layer: Int, kvHead: Int, token: Int) throws -> [Float] {
        let (l, h, t) = try tokenAddress(layer, kvHead, token, "recoveredKey")
        var key = [Float](repeating: 0, count: shape.headDim)
        try check(sparkv_inspect_key(handle, l, h, t, nil, &key))
        return key
    }

    /// A stored token's value as stored (rounded to the value precision).
    ///
    /// ```swift
    /// let v = try cache.value(layer: 0, kvHead: 0, token: 0)
    /// ```
    public func value(layer: Int, kvHead: Int, token: Int) throws -> [Float] {
        let (l, h, t) = try tokenAddress(layer, kvHead, token, "value")
        var value = [Float](repeating: 0, count: shape.headDim)
        try check(sparkv_inspect_value(handle, l, h, t, &value))
        return value
    }

    /// The window query norms and their mean for one layer and KV head.
    ///
    /// ```swift
    /// let c = try cache.windowQueryNorms(layer: 0, kvHead: 0).scale
    /// ```
    public func windowQueryNorms(layer: Int, kvHead: Int) throws -> WindowQueryNorms {
        let l = try layerIndex(layer, in: "windowQueryNorms")
        let h = try kvHeadIndex(kvHead, in: "windowQueryNorms")
        var norms = [Float](repeating: 0, count: shape.headDim)
        var scale: Float = 0
        try check(sparkv_inspect_qnorm(handle, l, h, &norms, &scale))
        return WindowQueryNorms(norms: norms, scale: scale)
    }

    /// The standardized Gaussian/exponential recovery draw of one pruned entry, from the library's
    /// published counter hash and 64-point inverse-CDF tables (see `sparkv_draw_standard` in
    /// sparkv.h): the standard-normal point for `.gaussian`, the square root of the unit-exponential
    /// point for `.exponential`, 0 for `.mean` and `.none`. Identical on every ISA and thread count.
    ///
    /// ```swift
    /// let z = KVCache.recoveryDraw(seed: 0, layer: 0, kvHead: 1, token: 17, channel: 5, recovery: .gaussian)
    /// ```
    public static func recoveryDraw(seed: UInt64, layer: UInt32, kvHead: UInt32, token: UInt64, channel: UInt32,
                                    recovery: CompressionPolicy.Recovery) -> Float {
        sparkv_draw_standard(seed, layer, kvHead, token, channel, recovery.cValue)
    }

    private func tokenAddress(_ layer: Int, _ kvHead: Int, _ token: Int, _ operation: String)
        throws -> (UInt32, UInt32, UInt64) {
        let l = try layerIndex(layer, in: operation)
        let h = try kvHeadIndex(kvHead, in: operation)
        guard token >= 0 else {
            throw SparKVError.index("\(operation): token \(token) is negative")
        }
        return (l, h, UInt64(token))
    }
}
