import Foundation
import SparKV

/// Why a ``Sampler`` cannot be made from some parameters.
public enum SamplingError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The temperature is negative, infinite or NaN.
    case temperature(Float)
    /// `topK` is negative.
    case topK(Int)
    /// `topP` is outside `(0, 1]`.
    case topP(Float)

    public var description: String {
        switch self {
        case .temperature(let t): return "temperature \(t) must be a finite number >= 0 (0 = greedy)"
        case .topK(let k): return "top-k \(k) must be >= 0 (0 = all tokens)"
        case .topP(let p): return "top-p \(p) must be in (0, 1] (1 = all tokens)"
        }
    }
}

/// Chooses the next token from a model's logits: greedy (temperature 0) or sampled from
/// `softmax(logits / temperature)` restricted to the `topK` most likely tokens and then to the
/// smallest set of most likely tokens whose probability reaches `topP` (nucleus sampling).
///
/// The random stream is a ``SplitMix64`` seeded with `seed`, so the same seed, parameters and logits
/// choose the same tokens on every run and machine.
///
/// ```swift
/// var sampler = try Sampler(temperature: 0.8, topK: 40, topP: 0.95, seed: 42)
/// let next = sampler.next(logits)
/// ```
public struct Sampler: Sendable {
    /// 0 chooses the largest logit (greedy); larger values flatten the distribution.
    public let temperature: Float
    /// Only the `topK` most likely tokens are candidates; 0 = no limit.
    public let topK: Int
    /// Only the smallest set of most likely tokens with total probability >= `topP` are candidates.
    public let topP: Float
    /// The seed the random stream started from.
    public let seed: UInt64
    private var rng: SplitMix64

    /// A sampler; the defaults are greedy decoding.
    ///
    /// - Throws: ``SamplingError`` for a temperature that is negative or not finite, a negative
    ///   `topK`, or a `topP` outside `(0, 1]`.
    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0) throws(SamplingError) {
        guard temperature.isFinite, temperature >= 0 else { throw .temperature(temperature) }
        guard topK >= 0 else { throw .topK(topK) }
        guard topP > 0, topP <= 1 else { throw .topP(topP) }   // also refuses NaN
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
        rng = SplitMix64(seed: seed)
    }

    /// True when every choice is the argmax (temperature 0): no randomness is drawn.
    public var isGreedy: Bool { temperature == 0 }

    /// The next token for `logits` (indices counted from the start of the collection).
    public mutating func next(_ logits: ArraySlice<Float>) -> Int {
        if isGreedy { return LlamaSession.greedy(logits) }
        let candidates = Self.distribution(Array(logits), temperature: temperature, topK: topK, topP: topP)
        return Self.draw(candidates, uniform: rng.nextUniform())
    }

    /// The next token for `logits`.
    public mutating func next(_ logits: [Float]) -> Int { next(logits[...]) }

    /// The candidates and their probabilities (summing to 1), most likely first (the lower index
    /// first on ties), after temperature, top-k and top-p. Temperature 0 gives the argmax alone.
    ///
    /// ```swift
    /// Sampler.distribution([2, 1, 0], temperature: 1, topK: 2, topP: 1)
    /// // [(index: 0, probability: 0.731), (index: 1, probability: 0.269)]
    /// ```
    public static func distribution(_ logits: [Float], temperature: Float, topK: Int = 0,
                                    topP: Float = 1) -> [(index: Int, probability: Double)] {
        guard !logits.isEmpty else { return [] }
        if temperature == 0 { return [(LlamaSession.greedy(logits), 1)] }
        let maxLogit = logits.max() ?? 0
        // Double: exp of (logit - max) / small temperatures underflows in Float long before Double.
        let t = Double(temperature)
        var weights = logits.map { $0.isNaN ? 0 : exp((Double($0) - Double(maxLogit)) / t) }
        var order = Array(weights.indices)
        // A full sort only when a cut needs the ranking; stable on ties by index.
        if topK > 0 || topP < 1 {
            order.sort { weights[$0] != weights[$1] ? weights[$0] > weights[$1] : $0 < $1 }
            if topK > 0 && topK < order.count { order.removeSubrange(topK...) }
        }
        var total = order.reduce(0.0) { $0 + weights[$1] }
        if topP < 1 {
            var kept = 0, mass = 0.0
            for i in order {
                mass += weights[i]
                kept += 1
                if mass >= Double(topP) * total { break }
            }
            order.removeSubrange(kept...)
            total = mass
        }
        if total <= 0 || !total.isFinite { return [(LlamaSession.greedy(logits), 1)] }
        for i in order { weights[i] /= total }
        return order.map { ($0, weights[$0]) }
    }

    /// The candidate whose cumulative probability first exceeds `uniform` (in (0, 1)).
    static func draw(_ candidates: [(index: Int, probability: Double)], uniform: Double) -> Int {
        var cumulative = 0.0
        for c in candidates {
            cumulative += c.probability
            if uniform < cumulative { return c.index }
        }
        return candidates.last?.index ?? 0   // rounding left the sum a hair under 1
    }
}
