import Foundation
import SparKV
import Testing

@testable import SparKVModel

/// The distribution properties of ``Sampler``: each cut reduces to the argmax at its extreme, the
/// probabilities are a softmax, and a seed fixes the stream.
@Suite("Sampler")
struct SamplerTests {
    /// Deterministic pseudo-random logits with distinct values.
    static func logits(_ n: Int, seed: UInt64 = 7) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in Float(rng.nextUniform() * 10 - 5) }
    }

    @Test func temperatureZeroIsGreedy() throws {
        let x = Self.logits(1000)
        var sampler = try Sampler(temperature: 0, seed: 99)
        #expect(sampler.isGreedy)
        for _ in 0..<5 { #expect(sampler.next(x) == LlamaSession.greedy(x)) }
        #expect(Sampler.distribution(x, temperature: 0).map(\.index) == [LlamaSession.greedy(x)])
    }

    @Test func topKOneIsArgmax() throws {
        let x = Self.logits(1000)
        var sampler = try Sampler(temperature: 1.5, topK: 1, seed: 3)
        for _ in 0..<50 { #expect(sampler.next(x) == LlamaSession.greedy(x)) }
    }

    @Test func tinyTopPIsArgmax() throws {
        let x = Self.logits(1000)
        var sampler = try Sampler(temperature: 1, topP: 1e-6, seed: 3)
        for _ in 0..<50 { #expect(sampler.next(x) == LlamaSession.greedy(x)) }
    }

    @Test func sameSeedSameTokensOtherSeedOtherTokens() throws {
        let x = Self.logits(200)
        func stream(_ seed: UInt64) throws -> [Int] {
            var s = try Sampler(temperature: 1, topK: 50, topP: 0.9, seed: seed)
            return (0..<64).map { _ in s.next(x) }
        }
        #expect(try stream(42) == stream(42))
        #expect(try stream(42) != stream(43))
    }

    @Test func probabilitiesAreASoftmaxOfLogitsOverTemperature() {
        let d = Sampler.distribution([2, 1, 0], temperature: 2)
        let e = [1.0, exp(-0.5), exp(-1.0)]
        let z = e.reduce(0, +)
        #expect(d.map(\.index) == [0, 1, 2])
        for (c, w) in zip(d, e) { #expect(abs(c.probability - w / z) < 1e-6) }   // Float weights
    }

    @Test func topKAndTopPCutTheTail() {
        let x = Self.logits(1000)
        let k = Sampler.distribution(x, temperature: 1, topK: 10)
        #expect(k.count == 10)
        #expect(abs(k.reduce(0) { $0 + $1.probability } - 1) < 1e-9)
        #expect(Set(k.map(\.index)) == Set(x.indices.sorted { x[$0] > x[$1] }.prefix(10)))
        // top-p keeps the smallest most-likely set reaching p of the full softmax's mass
        let full = Sampler.distribution(x, temperature: 1, topK: 1000)
        let p = Sampler.distribution(x, temperature: 1, topP: 0.5)
        let before = full.prefix(p.count - 1).reduce(0) { $0 + $1.probability }
        let reached = full.prefix(p.count).reduce(0) { $0 + $1.probability }
        #expect(before < 0.5 && reached >= 0.5 - 1e-12)
        #expect(p.map(\.index) == full.prefix(p.count).map(\.index))
    }

    /// The pruned ranking (only tokens above a weight threshold are sorted) gives the nucleus
    /// and the top k of a full sort, also when the threshold must be lowered many times.
    @Test func prunedRankingEqualsAFullSort() {
        var rng = SplitMix64(seed: 5)
        let wide = (0..<5000).map { _ in Float(rng.nextUniform() * -80) }   // weights down to e^-80, inside Float
        func reference(_ x: [Float], topK: Int, topP: Double) -> [Int] {
            let w = x.map { exp(Double($0 - (x.max() ?? 0))) }
            var order = x.indices.sorted { w[$0] != w[$1] ? w[$0] > w[$1] : $0 < $1 }
            if topK > 0 { order = Array(order.prefix(topK)) }
            if topP >= 1 { return order }
            let goal = topP * order.reduce(0) { $0 + w[$1] }
            var mass = 0.0, n = 0
            for i in order { mass += w[i]; n += 1; if mass >= goal { break } }
            return Array(order.prefix(n))
        }
        // (p close to 1 is ill-conditioned: Float and Double weights may cut the far tail differently.)
        for (k, p) in [(0, 0.5), (0, 0.99), (4000, 1.0), (3, 0.99), (4999, 0.9), (0, 0.01)] {
            let got = Sampler.distribution(wide, temperature: 1, topK: k, topP: Float(p)).map(\.index)
            let want = reference(wide, topK: k, topP: Double(Float(p)))
            let same = Set(got) == Set(want)
            #expect(same, "top-k \(k), top-p \(p): \(got.count) vs \(want.count) tokens")
        }
    }

    /// Empirical frequencies follow the probabilities (20 000 draws, 3 tokens).
    @Test func frequenciesFollowTheDistribution() throws {
        let x: [Float] = [1, 0, -1]
        var s = try Sampler(temperature: 1, seed: 1)
        var counts = [0, 0, 0]
        for _ in 0..<20_000 { counts[s.next(x)] += 1 }
        for c in Sampler.distribution(x, temperature: 1) {
            #expect(abs(Double(counts[c.index]) / 20_000 - c.probability) < 0.02)
        }
    }

    @Test func invalidParametersAreTypedErrors() {
        #expect(throws: SamplingError.temperature(-1)) { try Sampler(temperature: -1) }
        #expect(throws: SamplingError.topK(-2)) { try Sampler(topK: -2) }
        #expect(throws: SamplingError.topP(0)) { try Sampler(topP: 0) }
        #expect(throws: SamplingError.topP(1.5)) { try Sampler(topP: 1.5) }
    }
}
