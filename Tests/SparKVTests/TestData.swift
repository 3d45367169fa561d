// TestData.swift — seeded random inputs for the kernel tests.

import Foundation

/// splitmix64: small, seedable, identical on every platform.
struct TestRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    mutating func unit() -> Double { (Double(next() >> 11) + 0.5) * 0x1p-53 }

    /// Standard normal (Box-Muller), as a Float.
    mutating func normal() -> Float {
        let u1 = unit(), u2 = unit()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    mutating func normals(_ count: Int, scale: Float = 1) -> [Float] {
        var out = [Float]()
        out.reserveCapacity(count)
        for _ in 0..<count { out.append(normal() * scale) }
        return out
    }

    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &self) }
}

/// The inputs of one layer's prefill.
struct TestPrompt: Sendable {
    var nKV: Int
    var nQ: Int
    var D: Int
    var n: Int
    var nWindow: Int
    /// [nKV][n][D]
    var keys: [Float]
    /// [nKV][n][D]
    var values: [Float]
    /// [nQ][nWindow][D]
    var qWindow: [Float]
}

/// Kinds of prompt keys.
enum KeyKind: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Keys ~ N(0, 1), window queries ~ N(0, 1).
    case random
    /// Keys ~ N(0, 1) plus a few outlier channels with |k| in [300, 600]; window queries with
    /// norms in the hundreds.
    case outlier
    var description: String { rawValue }
}

enum TestData {
    /// Outlier channels of a KV head: a few fixed channels per head, chosen from the seed.
    static func outlierChannels(D: Int, rng: inout TestRNG) -> [Int] {
        let count = max(2, D / 16)
        var channels = Set<Int>()
        while channels.count < count { channels.insert(rng.int(0..<D)) }
        return channels.sorted()
    }

    /// A prompt for one layer.
    static func prompt(config: RefConfig, n: Int, nWindow: Int, kind: KeyKind, seed: UInt64) -> TestPrompt {
        var rng = TestRNG(seed: seed)
        let D = config.D
        var keys = rng.normals(config.nKV * n * D)
        let values = rng.normals(config.nKV * n * D)
        var qWindow: [Float]
        switch kind {
        case .random:
            qWindow = rng.normals(config.nQ * nWindow * D)
        case .outlier:
            for h in 0..<config.nKV {
                let channels = outlierChannels(D: D, rng: &rng)
                for t in 0..<n {
                    for j in channels {
                        let mag = Float(300 + 300 * rng.unit())
                        // mostly large, a few tokens small so the outlier channel is not always kept
                        let sign: Float = rng.next() & 1 == 0 ? 1 : -1
                        keys[(h * n + t) * D + j] = (t % 7 == 3 ? 0.5 : 1) * sign * mag
                    }
                }
            }
            // Large window queries: norms ~ 60 * sqrt(window) = hundreds.
            qWindow = rng.normals(config.nQ * nWindow * D, scale: 60)
        }
        return TestPrompt(nKV: config.nKV, nQ: config.nQ, D: D, n: n, nWindow: nWindow,
                          keys: keys, values: values, qWindow: qWindow)
    }

    /// A prompt full of saliency ties: window queries are +-1 in every entry of every query head
    /// of a group (so all qn_j are equal), keys take values in {0, +-1, +-2} and every 5th token is
    /// all zeros.
    static func tiedPrompt(config: RefConfig, n: Int, nWindow: Int, seed: UInt64) -> TestPrompt {
        var rng = TestRNG(seed: seed)
        let D = config.D, G = config.group
        var keys = [Float](repeating: 0, count: config.nKV * n * D)
        for h in 0..<config.nKV {
            for t in 0..<n where t % 5 != 0 {
                for j in 0..<D {
                    let v = Float(rng.int(0..<3))
                    keys[(h * n + t) * D + j] = rng.next() & 1 == 0 ? v : -v
                }
            }
        }
        let values = rng.normals(config.nKV * n * D)
        var qWindow = [Float](repeating: 0, count: config.nQ * nWindow * D)
        for h in 0..<config.nKV {
            for w in 0..<nWindow {
                // the same sign in every channel and every query head of the group: qbar = +-1
                let sign: Float = rng.next() & 1 == 0 ? 1 : -1
                for g in 0..<G {
                    for j in 0..<D { qWindow[((h * G + g) * nWindow + w) * D + j] = sign }
                }
            }
        }
        return TestPrompt(nKV: config.nKV, nQ: config.nQ, D: D, n: n, nWindow: nWindow,
                          keys: keys, values: values, qWindow: qWindow)
    }

    /// A decode query [nQ][D]; `scale` keeps logits modest for outlier keys.
    static func query(config: RefConfig, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = TestRNG(seed: seed ^ 0x5151_5151)
        return rng.normals(config.nQ * config.D, scale: scale)
    }

    /// The query scale that keeps logits O(1) for a key kind.
    static func queryScale(_ kind: KeyKind) -> Float { kind == .outlier ? 0.01 : 1 }

    /// One appended token: keys and values [nKV][D].
    static func appendToken(config: RefConfig, seed: UInt64, kind: KeyKind = .random) -> (keys: [Float], values: [Float]) {
        var rng = TestRNG(seed: seed ^ 0xA99E_0D00)
        var k = rng.normals(config.nKV * config.D)
        if kind == .outlier { k[0] = 450; k[config.D - 1] = -380 }
        return (k, rng.normals(config.nKV * config.D))
    }
}
