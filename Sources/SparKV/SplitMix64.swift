/// SplitMix64: a tiny, fast, deterministic 64-bit generator (Steele, Lea & Flood 2014), the same
/// mixer the C library uses for its recovery draws. Used by ``SyntheticKV`` so generated data is
/// identical on every platform and Swift version (no Foundation or system randomness).
///
/// ```swift
/// var rng = SplitMix64(seed: 42)
/// let x = rng.next()                  // UInt64
/// let u = rng.nextUniform()           // Double in (0, 1)
/// let i = Int.random(in: 0..<10, using: &rng)
/// ```
public struct SplitMix64: RandomNumberGenerator, Hashable, Sendable {
    /// The generator's whole state; each ``next()`` adds the golden-ratio increment.
    public var state: UInt64

    /// Starts a stream at `seed`.
    ///
    /// ```swift
    /// var rng = SplitMix64(seed: 0)
    /// ```
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    ///
    /// ```swift
    /// let bits = rng.next()
    /// ```
    @inlinable
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.finalize(state)
    }

    /// A uniform double strictly inside (0, 1): `((bits >> 11) + 0.5) * 2^-53`, safe for `log`.
    ///
    /// ```swift
    /// let exponential = -log(rng.nextUniform())
    /// ```
    @inlinable
    public mutating func nextUniform() -> Double {
        (Double(next() >> 11) + 0.5) * 0x1p-53
    }

    /// The SplitMix64 output function on its own: a good 64-bit hash of `z + golden ratio`.
    /// `mix(mix(a) ^ b)` chains inputs into one seed, as the token hash of `sparkv_draw_standard` does.
    ///
    /// ```swift
    /// let streamSeed = SplitMix64.mix(SplitMix64.mix(seed) ^ UInt64(layer))
    /// ```
    @inlinable
    public static func mix(_ z: UInt64) -> UInt64 {
        finalize(z &+ 0x9E37_79B9_7F4A_7C15)
    }

    @inlinable
    static func finalize(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
