import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A seeded generator of synthetic, Llama-like post-RoPE keys, values and queries, for demos,
/// tests and benchmarks without a model.
///
/// How the data is made (all from ``SplitMix64`` streams; nothing depends on the platform):
///
/// * **Per-head key profile** (fixed per layer and KV head): every channel `j` has a scale
///   `σ_j = exp(0.7·N(0,1))` (channel magnitudes spread over about a decade, as in real key
///   caches) and a mean `μ_j = 0.5·σ_j·N(0,1)`. Two RoPE pairs in the low-frequency half of the
///   head (4 channels, ``outlierChannels(layer:kvHead:)``) are *outlier channels*: factor
///   `f ∈ [20, 50]`, `μ = ±0.8·f`, `σ = 0.2·f`: large and steady, like the massive key channels
///   of Llama models. `|k|` there is typically 15–40 and reaches 100–150 in the tails.
/// * **Keys**: pre-RoPE `k_j = μ_j + σ_j · s_t · z_j` with `z_j` Laplace of unit variance (heavy
///   tails) and a per-token log-normal scale `s_t = exp(0.3·N(0,1))`; then adjacent channel pairs
///   `(2i, 2i+1)` are rotated by `position · base^(-2i/D)` (RoPE, ``ropeBase`` 500 000 as in
///   Llama 3 by default).
/// * **Queries**: per query head, channel scales follow the key scales of its KV head (GQA group
///   `h = qHead / G`): `σq_j = σ_j^0.75 · exp(0.3·N(0,1))`, mean `0.3·σq_j·N(0,1)`; on the key's
///   outlier channels a steady component of the key's sign, magnitude 1–2, scale 0.5. All times
///   ``queryGain``, same Laplace noise and token scale as keys, rotated at the query's position.
///   With the default gain (0.4) the attention logits (scale `1/sqrt(D)`) have a standard
///   deviation of about 1–5 depending on the head: some heads attend to a handful of tokens,
///   others to hundreds.
/// * **Values**: `v_j = ν_j · N(0,1)` with a per-channel scale `ν_j = exp(0.3·N(0,1))`, no rotation.
///
/// Every row `(layer, head, token)` comes from its own stream seeded by a hash of
/// `(seed, kind, layer, head, token)`, so a token's data does not depend on the range it was
/// generated in: the rows of token 4096 in `keys(layer: 0, tokens: 0..<4097)` equal
/// `keys(layer: 0, tokens: 4096..<4097)`. Large requests are filled in parallel (Dispatch).
///
/// ```swift
/// let shape = ModelShape.llama3_8B(capacity: 8192)
/// let data = SyntheticKV(shape: shape, seed: 7)
/// let keys = data.keys(layer: 0, tokens: 0..<4096)          // [8][4096][128]
/// let window = data.queries(layer: 0, positions: 4064..<4096) // [32][32][128]
/// let next = data.keys(layer: 0, tokens: 4096..<4097)        // one decode token, [8][128]
/// ```
public struct SyntheticKV: Hashable, Sendable {
    /// Heads and head dimension of the generated tensors (`layers` and `capacity` are not used:
    /// any layer index and position can be generated).
    public let shape: ModelShape
    /// The seed; different seeds give unrelated data.
    public let seed: UInt64
    /// RoPE base θ: 500 000 (Llama 3) or 10 000 (Llama 2, SmolLM2).
    public let ropeBase: Double
    /// Multiplier of query magnitudes; it sets how peaked attention is (default 0.4).
    public let queryGain: Float

    /// Outlier RoPE pairs per head (each is two channels).
    static let outlierPairs = 2

    /// Creates a generator. Generating is cheap to set up; the data is made on demand.
    ///
    /// ```swift
    /// let data = SyntheticKV(shape: .smolLM2_135M(capacity: 2048), seed: 1, ropeBase: 10_000)
    /// ```
    public init(shape: ModelShape, seed: UInt64, ropeBase: Double = 500_000, queryGain: Float = 0.4) {
        self.shape = shape
        self.seed = seed
        self.ropeBase = ropeBase
        self.queryGain = queryGain
    }

    private var kvHeads: Int { max(0, shape.kvHeads) }
    private var queryHeads: Int { max(0, shape.queryHeads) }
    /// Generated rows have this many floats; 0 (nothing generated) for a negative or odd head dimension.
    private var headDim: Int { shape.headDim > 0 && shape.headDim % 2 == 0 ? shape.headDim : 0 }

    // MARK: Arrays

    /// Post-RoPE keys `[kvHeads][tokens.count][headDim]` of token positions `tokens`.
    ///
    /// ```swift
    /// let k = data.keys(layer: 3, tokens: 0..<1024)
    /// ```
    public func keys(layer: Int, tokens: Range<Int>) -> [Float] {
        makeArray(rows: kvHeads, count: tokens.count) { fill(.key, layer: layer, rows: kvHeads, positions: tokens, into: $0) }
    }

    /// Values `[kvHeads][tokens.count][headDim]`.
    ///
    /// ```swift
    /// let v = data.values(layer: 3, tokens: 0..<1024)
    /// ```
    public func values(layer: Int, tokens: Range<Int>) -> [Float] {
        makeArray(rows: kvHeads, count: tokens.count) { fill(.value, layer: layer, rows: kvHeads, positions: tokens, into: $0) }
    }

    /// Post-RoPE queries `[queryHeads][positions.count][headDim]` at `positions`.
    ///
    /// ```swift
    /// let window = data.queries(layer: 0, positions: 4064..<4096)
    /// let decode = data.queries(layer: 0, positions: 4096..<4097)   // [queryHeads][headDim]
    /// ```
    public func queries(layer: Int, positions: Range<Int>) -> [Float] {
        makeArray(rows: queryHeads, count: positions.count) { fill(.query, layer: layer, rows: queryHeads, positions: positions, into: $0) }
    }

    // MARK: Filling caller buffers

    /// Writes ``keys(layer:tokens:)`` into `buffer` without allocating.
    ///
    /// - Throws: ``SparKVError/invalidShape(_:)`` if `buffer` does not hold exactly
    ///   `kvHeads * tokens.count * headDim` floats.
    ///
    /// ```swift
    /// var k = [Float](repeating: 0, count: 8 * 4096 * 128)
    /// try k.withUnsafeMutableBufferPointer { try data.fillKeys(layer: 0, tokens: 0..<4096, into: $0) }
    /// ```
    public func fillKeys(layer: Int, tokens: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws {
        try checkCount(buffer, rows: kvHeads, count: tokens.count, what: "keys")
        fill(.key, layer: layer, rows: kvHeads, positions: tokens, into: buffer)
    }

    /// Writes ``values(layer:tokens:)`` into `buffer` without allocating.
    ///
    /// ```swift
    /// try v.withUnsafeMutableBufferPointer { try data.fillValues(layer: 0, tokens: 0..<4096, into: $0) }
    /// ```
    public func fillValues(layer: Int, tokens: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws {
        try checkCount(buffer, rows: kvHeads, count: tokens.count, what: "values")
        fill(.value, layer: layer, rows: kvHeads, positions: tokens, into: buffer)
    }

    /// Writes ``queries(layer:positions:)`` into `buffer` without allocating.
    ///
    /// ```swift
    /// try q.withUnsafeMutableBufferPointer { try data.fillQueries(layer: 0, positions: 4096..<4097, into: $0) }
    /// ```
    public func fillQueries(layer: Int, positions: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws {
        try checkCount(buffer, rows: queryHeads, count: positions.count, what: "queries")
        fill(.query, layer: layer, rows: queryHeads, positions: positions, into: buffer)
    }

    /// The outlier channels of one layer and KV head (ascending; two adjacent RoPE pairs in the
    /// low-frequency half of the head). Queries of the head's GQA group share them.
    ///
    /// ```swift
    /// data.outlierChannels(layer: 0, kvHead: 0)   // e.g. [68, 69, 100, 101]
    /// ```
    public func outlierChannels(layer: Int, kvHead: Int) -> [Int] {
        keyProfile(layer: layer, kvHead: kvHead).outliers
    }

    // MARK: Implementation

    enum Kind: UInt64 {
        case key = 1, value = 2, query = 3, keyProfile = 4, valueProfile = 5, queryProfile = 6
    }

    private struct Profile: Sendable {
        var mean: [Float]
        var scale: [Float]
        var outliers: [Int]
    }

    /// Seed of the stream of one (kind, layer, head, token).
    private func streamSeed(_ kind: Kind, _ layer: Int, _ head: Int, _ token: Int) -> UInt64 {
        var h = SplitMix64.mix(seed ^ (kind.rawValue &* 0xA24B_AED4_963E_E407))
        h = SplitMix64.mix(h ^ UInt64(bitPattern: Int64(layer)))
        h = SplitMix64.mix(h ^ UInt64(bitPattern: Int64(head)))
        return SplitMix64.mix(h ^ UInt64(bitPattern: Int64(token)))
    }

    private static func gaussian(_ rng: inout SplitMix64) -> Float {
        let u1 = rng.nextUniform(), u2 = rng.nextUniform()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    private func keyProfile(layer: Int, kvHead: Int) -> Profile {
        let d = headDim
        var rng = SplitMix64(seed: streamSeed(.keyProfile, layer, kvHead, 0))
        var p = Profile(mean: [Float](repeating: 0, count: d), scale: [Float](repeating: 0, count: d), outliers: [])
        for j in 0..<d {
            let s = Float(exp(0.7 * Double(Self.gaussian(&rng))))
            p.scale[j] = s
            p.mean[j] = 0.5 * s * Self.gaussian(&rng)
        }
        // Outliers: distinct pairs among the low-frequency half [d/4, d/2) of the pair indices.
        let firstPair = d / 4, pairCount = d / 2 - d / 4
        guard pairCount > 0 else { return p }
        var pairs: [Int] = []
        while pairs.count < min(Self.outlierPairs, pairCount) {
            let pair = firstPair + Int(rng.next() % UInt64(pairCount))
            if !pairs.contains(pair) { pairs.append(pair) }
        }
        for pair in pairs {
            let f = Float(20 + 30 * rng.nextUniform())
            for j in [2 * pair, 2 * pair + 1] {
                p.mean[j] = (rng.next() & 1 == 0 ? 0.8 : -0.8) * f
                p.scale[j] = 0.2 * f
            }
        }
        p.outliers = pairs.flatMap { [2 * $0, 2 * $0 + 1] }.sorted()
        return p
    }

    private func queryProfile(layer: Int, queryHead: Int) -> Profile {
        let d = headDim
        let group = max(1, shape.kvHeads > 0 ? queryHeads / shape.kvHeads : 1)
        let key = keyProfile(layer: layer, kvHead: queryHead / group)
        var rng = SplitMix64(seed: streamSeed(.queryProfile, layer, queryHead, 0))
        var p = Profile(mean: [Float](repeating: 0, count: d), scale: [Float](repeating: 0, count: d),
                        outliers: key.outliers)
        for j in 0..<d {
            // Query channel scales follow the key's (q and k norms are correlated per channel in
            // real models), with a per-query-head jitter.
            let s = Float(pow(Double(key.scale[j]), 0.75) * exp(0.3 * Double(Self.gaussian(&rng))))
            p.scale[j] = queryGain * s
            p.mean[j] = queryGain * 0.3 * s * Self.gaussian(&rng)
        }
        // The key outlier channels get a steady, moderate query component of the key's sign.
        for j in key.outliers {
            let magnitude = Float(1 + rng.nextUniform())
            p.mean[j] = queryGain * (key.mean[j] < 0 ? -magnitude : magnitude)
            p.scale[j] = queryGain * 0.5
        }
        return p
    }

    private func valueScale(layer: Int, kvHead: Int) -> [Float] {
        var rng = SplitMix64(seed: streamSeed(.valueProfile, layer, kvHead, 0))
        return (0..<headDim).map { _ in Float(exp(0.3 * Double(Self.gaussian(&rng)))) }
    }

    private func makeArray(rows: Int, count: Int, _ body: (UnsafeMutableBufferPointer<Float>) -> Void) -> [Float] {
        let n = rows * max(0, count) * headDim
        return [Float](unsafeUninitializedCapacity: n) { buffer, initialized in
            body(buffer)
            initialized = n
        }
    }

    private func checkCount(_ buffer: UnsafeMutableBufferPointer<Float>, rows: Int, count: Int, what: String) throws {
        let n = rows * max(0, count) * headDim
        guard buffer.count == n else {
            throw SparKVError.invalidShape(
                "SyntheticKV: \(what) buffer holds \(buffer.count) floats; [\(rows)][\(count)][\(headDim)] needs \(n)")
        }
    }

    /// Fills `[rows][positions.count][headDim]`, in parallel over chunks of positions for large
    /// requests. Every row has its own stream, so the chunking does not change the data.
    private func fill(_ kind: Kind, layer: Int, rows: Int, positions: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) {
        let d = headDim, n = positions.count
        guard d > 0, n > 0, rows > 0, let base = out.baseAddress else { return }
        let profiles: [Profile] = (0..<rows).map { h in
            switch kind {
            case .value: return Profile(mean: [], scale: valueScale(layer: layer, kvHead: h), outliers: [])
            case .query: return queryProfile(layer: layer, queryHead: h)
            default: return keyProfile(layer: layer, kvHead: h)
            }
        }
        let inverseFrequency = (0..<d / 2).map { pow(ropeBase, -Double(2 * $0) / Double(d)) }
        let chunk = 64
        let chunks = (n + chunk - 1) / chunk
        // Chunks write disjoint rows of `out`; the address crosses into the concurrent closure as
        // an integer because pointers are not Sendable.
        let address = UInt(bitPattern: base)
        let work: @Sendable (Int) -> Void = { c in
            let local = c * chunk..<min(n, c * chunk + chunk)
            guard let base = UnsafeMutablePointer<Float>(bitPattern: address) else { return }
            if kind == .value {
                self.fillValueRows(layer: layer, profiles: profiles, positions: positions, local: local, base: base)
            } else {
                self.fillRotatedRows(kind, layer: layer, profiles: profiles, inverseFrequency: inverseFrequency,
                                     positions: positions, local: local, base: base)
            }
        }
        if chunks > 1 && rows * n * d >= 1 << 16 {
            DispatchQueue.concurrentPerform(iterations: chunks, execute: work)
        } else {
            for c in 0..<chunks { work(c) }
        }
    }

    /// Keys or queries of positions `positions[local]`: profile + heavy-tailed noise, then RoPE.
    /// Position-outer so the rotation angles of a position are computed once for all heads.
    private func fillRotatedRows(_ kind: Kind, layer: Int, profiles: [Profile], inverseFrequency: [Double],
                                 positions: Range<Int>, local: Range<Int>, base: UnsafeMutablePointer<Float>) {
        let d = headDim, n = positions.count, pairs = d / 2
        var cosines = [Float](repeating: 0, count: pairs), sines = [Float](repeating: 0, count: pairs)
        let laplaceScale = Float(0.5.squareRoot())  // Laplace(b) has variance 2b^2: unit variance
        for t in local {
            let position = positions.lowerBound + t
            for i in 0..<pairs {
                let angle = Double(position) * inverseFrequency[i]
                cosines[i] = Float(cos(angle))
                sines[i] = Float(sin(angle))
            }
            for h in profiles.indices {
                var rng = SplitMix64(seed: streamSeed(kind, layer, h, position))
                let tokenScale = Float(exp(0.3 * Double(Self.gaussian(&rng)))) * laplaceScale
                let row = base + (h * n + t) * d
                profiles[h].mean.withUnsafeBufferPointer { mean in
                    profiles[h].scale.withUnsafeBufferPointer { scale in
                        for i in 0..<pairs {
                            let x = mean[2 * i] + scale[2 * i] * tokenScale * Self.laplace(&rng)
                            let y = mean[2 * i + 1] + scale[2 * i + 1] * tokenScale * Self.laplace(&rng)
                            row[2 * i] = x * cosines[i] - y * sines[i]
                            row[2 * i + 1] = x * sines[i] + y * cosines[i]
                        }
                    }
                }
            }
        }
    }

    /// Values of positions `positions[local]`: per-channel scale times a standard normal.
    private func fillValueRows(layer: Int, profiles: [Profile], positions: Range<Int>, local: Range<Int>,
                               base: UnsafeMutablePointer<Float>) {
        let d = headDim, n = positions.count
        for h in profiles.indices {
            profiles[h].scale.withUnsafeBufferPointer { scale in
                for t in local {
                    var rng = SplitMix64(seed: streamSeed(.value, layer, h, positions.lowerBound + t))
                    let row = base + (h * n + t) * d
                    var j = 0
                    while j < d {
                        // Box–Muller in float: two normals from one 64-bit draw (two 24-bit uniforms).
                        let bits = rng.next()
                        let u1 = (Float(bits >> 40) + 0.5) * 0x1p-24, u2 = (Float((bits >> 16) & 0xFF_FFFF) + 0.5) * 0x1p-24
                        let r = (-2 * log(u1)).squareRoot(), a = 2 * Float.pi * u2
                        row[j] = scale[j] * r * cos(a)
                        row[j + 1] = scale[j + 1] * r * sin(a)
                        j += 2
                    }
                }
            }
        }
    }

    /// Standard Laplace (b = 1) from one 64-bit draw: the top 24 bits give the magnitude, bit 0 the sign.
    @inline(__always)
    private static func laplace(_ rng: inout SplitMix64) -> Float {
        let bits = rng.next()
        let u = (Float(bits >> 40) + 0.5) * 0x1p-24
        let magnitude = -log(u)
        return bits & 1 == 0 ? magnitude : -magnitude
    }
}
