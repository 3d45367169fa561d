// TestRng.swift — the model tests' deterministic data (SplitMix64).

/// SplitMix64: deterministic test data for the kernel tests.
struct TestRng {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in scale * float() } }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next() >> 32) }
    /// Uniform in 0..<n.
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    /// fp16 bits of a uniform value in [-scale, scale).
    mutating func half(_ scale: Float) -> UInt16 { Float16(scale * float()).bitPattern }
}
