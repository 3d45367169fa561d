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
        let c = Self.candidates(Array(logits), temperature: temperature, topK: topK, topP: topP)
        // Inverse CDF over the candidates in their order: any fixed order samples the same distribution.
        let target = rng.nextUniform() * c.total
        var cumulative = 0.0
        for i in c.order {
            cumulative += Double(c.weights[i])
            if target < cumulative { return i }
        }
        return c.order.last ?? 0   // rounding left the sum a hair under the total
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
        let c = candidates(logits, temperature: temperature, topK: topK, topP: topP)
        return c.order.sorted { c.weights[$0] != c.weights[$1] ? c.weights[$0] > c.weights[$1] : $0 < $1 }
            .map { ($0, Double(c.weights[$0]) / c.total) }
    }

    /// The tokens that may be drawn, their unnormalized weights `exp((logit - max) / temperature)`
    /// (indexed by token) and the weights' sum over the candidates. The order is by weight only when
    /// top-k or top-p needed the ranking.
    static func candidates(_ logits: [Float], temperature: Float, topK: Int,
                           topP: Float) -> (order: [Int], weights: [Float], total: Double) {
        let maxLogit = logits.max() ?? 0
        // A NaN logit gets weight 0; exp underflowing to 0 for hopeless tokens is harmless.
        let weights = logits.map { $0.isNaN ? 0 : exp(($0 - maxLogit) / temperature) }
        let total = weights.reduce(0.0) { $0 + Double($1) }
        guard total > 0, total.isFinite else { return ([LlamaSession.greedy(logits)], [Float](repeating: 1, count: logits.count), 1) }
        guard topK > 0 || topP < 1 else { return (Array(weights.indices), weights, total) }

        // Only the heavy tokens need sorting. Tokens of weight >= tau suffice when they are at least
        // top-k of them (the top k are among them) or, without top-k, when they hold the top-p mass
        // (the nucleus is a prefix of the ranking, so it stops inside them); lower tau until they do.
        var tau: Float = 1e-3
        var heavy: [Int] = []
        while true {
            heavy = weights.indices.filter { weights[$0] >= tau }
            let mass = heavy.reduce(0.0) { $0 + Double(weights[$1]) }
            let enough = topK > 0 ? heavy.count >= topK : mass >= Double(topP) * total
            if enough || tau == 0 { break }
            tau = tau < 1e-30 ? 0 : tau * 1e-3
        }
        heavy.sort { weights[$0] != weights[$1] ? weights[$0] > weights[$1] : $0 < $1 }
        if topK > 0 && topK < heavy.count { heavy.removeSubrange(topK...) }
        var kept = heavy.reduce(0.0) { $0 + Double(weights[$1]) }
        if topP < 1 {
            // The nucleus of what top-k left (of everything without top-k).
            let goal = Double(topP) * (topK > 0 ? kept : total)
            var count = 0, mass = 0.0
            for i in heavy {
                mass += Double(weights[i])
                count += 1
                if mass >= goal { break }
            }
            heavy.removeSubrange(count...)
            kept = mass
        }
        return (heavy, weights, kept)
    }
}
