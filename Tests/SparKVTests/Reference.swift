// Reference.swift — a naive, scalar, double-precision model of SparK as specified in
// notes/common.md and include/sparkv.h. Written for clarity, not speed, and independently of
// csrc/: every number the tests compare against the C library comes from here.
//
// Nothing in this file imports CSparKV: the reference must not share code with the library.

import Foundation

// MARK: - Policy vocabulary (reference side)

/// Storage precision of keys/values.
enum RefPrecision: String, Sendable, CaseIterable, CustomStringConvertible {
    case f32, f16, bf16

    var bytes: Int { self == .f32 ? 4 : 2 }
    var description: String { rawValue }

    /// Round a float to this precision and read it back as a float.
    func round(_ x: Float) -> Float {
        switch self {
        case .f32:
            return x
        case .f16:
            return Float(Float16(x)) // IEEE round to nearest even
        case .bf16:
            // Round to nearest even on the upper 16 bits: add 0x7fff + lsb, truncate.
            let bits = x.bitPattern
            let lsb = (bits >> 16) & 1
            let rounded = (bits &+ 0x7FFF &+ lsb) & 0xFFFF_0000
            return Float(bitPattern: rounded)
        }
    }
}

/// How pruned key entries are rebuilt.
enum RefRecovery: String, Sendable, CaseIterable, CustomStringConvertible {
    case none, mean, gaussian, exponential

    /// fp16 statistics stored per compressed token.
    var statCount: Int {
        switch self {
        case .none: return 0
        case .mean: return 1
        case .exponential: return 2
        case .gaussian: return 3
        }
    }
    var description: String { rawValue }
}

/// Everything the reference needs to know about a cache: shape and policy.
struct RefConfig: Sendable, CustomStringConvertible {
    var nQ: Int = 1
    var nKV: Int = 1
    var D: Int = 64
    var r: Float = 0
    var cumulative: Bool = false
    var p: Float = 0.9
    var minKeep: Int = 1
    var maxKeep: Int = 0
    var recovery: RefRecovery = .mean
    var signs: Bool = true
    var keyPrecision: RefPrecision = .f16
    var valuePrecision: RefPrecision = .f16
    var window: Int = 32
    var seed: UInt64 = 0
    var attentionScale: Float = 0
    var threads: Int = 1

    var group: Int { nQ / nKV }

    /// TOPK kept channels: T = D - floor((double)r * D).
    var topkKeep: Int { D - Int((Double(r) * Double(D)).rounded(.down)) }

    /// Whether prompt keys are stored compressed.
    var prunes: Bool { cumulative || topkKeep < D }

    /// The softmax scale attention uses.
    var softmaxScale: Double { attentionScale > 0 ? Double(attentionScale) : 1.0 / Double(D).squareRoot() }

    var description: String {
        let sel = cumulative ? "cum(p=\(p),\(minKeep)..\(maxKeep))" : "topk(r=\(r))"
        return "G=\(group) nKV=\(nKV) D=\(D) \(sel) \(recovery) signs=\(signs) K=\(keyPrecision) V=\(valuePrecision) w=\(window) seed=\(seed)"
    }
}

// MARK: - Small maths

enum RefMath {
    /// splitmix64 finaliser, as documented in sparkv.h.
    static func mix(_ input: UInt64) -> UInt64 {
        var z = input &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The bin (0..<64) of the recovery draw of (seed, layer, head, token, channel), as sparkv.h
    /// documents it: the 64-bit token hash, then murmur3's fmix32 of key + counter * 0x9E3779B9,
    /// channel j reading field (j / 16) % 5 of counter 16 * (j / 80) + j % 16.
    static func drawBin(seed: UInt64, layer: Int, head: Int, token: Int, channel: Int) -> Int {
        let h = mix(mix(mix(mix(seed) ^ UInt64(layer)) ^ UInt64(head)) ^ UInt64(token))
        let lane = channel % 16, block = channel / 16
        let counter = UInt32(16 * (block / 5) + lane)
        var x = (UInt32(truncatingIfNeeded: h) ^ UInt32(truncatingIfNeeded: h >> 32)) &+ counter &* 0x9E37_79B9
        x ^= x >> 16
        x = x &* 0x85EB_CA6B
        x ^= x >> 13
        x = x &* 0xC2B2_AE35
        x ^= x >> 16
        return Int((x >> UInt32(26 - 6 * (block % 5))) & 63)
    }

    /// The 64 conditional means of the standard normal over equal-probability bins, from its
    /// quantile (bisection on erfc, in double) and density, rounded to Float.
    static let normalPoints: [Float] = {
        func cdf(_ x: Double) -> Double { 0.5 * erfc(-x / 2.0.squareRoot()) }
        func pdf(_ x: Double) -> Double { x.isInfinite ? 0 : exp(-0.5 * x * x) / (2 * Double.pi).squareRoot() }
        func quantile(_ p: Double) -> Double {
            var lo = -40.0, hi = 40.0
            for _ in 0..<200 {
                let mid = 0.5 * (lo + hi)
                if mid == lo || mid == hi { break }
                if cdf(mid) < p { lo = mid } else { hi = mid }
            }
            return 0.5 * (lo + hi)
        }
        let edges = [-Double.infinity] + (1..<64).map { quantile(Double($0) / 64) } + [Double.infinity]
        return (0..<64).map { Float(64 * (pdf(edges[$0]) - pdf(edges[$0 + 1]))) }
    }()

    /// sqrt of the 64 conditional means of the unit exponential over equal-probability bins.
    static let sqrtExponentialPoints: [Float] = {
        let a = (0..<64).map { -log1p(-Double($0) / 64) }
        return (0..<64).map { i in
            let upper = i + 1 < 64 ? (a[i + 1] + 1) * Double(63 - i) : 0
            return Float(((a[i] + 1) * Double(64 - i) - upper).squareRoot())
        }
    }()

    /// sqrt(c / qn_j) as recovery uses it: sparkv.h floors qn_j at c / SPARKV_RECOVERY_QN_FLOOR (16),
    /// so a recovered entry is at most 4 sqrt(x / c) and continuous at qn_j = 0.
    static func recoveryRq(qn: Float, c: Float) -> Float {
        let floorQn = Double(c) / 16
        return Float((Double(c) / max(Double(qn), floorQn)).squareRoot())
    }

    /// A statistic as stored: fp16(Float(sqrt(stat / c))), read back as a double.
    static func storedStat(_ stat: Double, c: Float) -> Double {
        Double(Float16(Float((stat / Double(c)).squareRoot())))
    }

    /// Window query norms of every KV head: qn[h][j] and c[h].
    /// qWindow is [nQ][nWindow][D]; only the last min(window, nWindow) rows are used.
    static func windowNorms(qWindow: [Float], nWindow: Int, config: RefConfig) -> (qn: [[Float]], c: [Float]) {
        let D = config.D, G = config.group
        let used = min(config.window, nWindow)
        var allQn: [[Float]] = []
        var allC: [Float] = []
        for h in 0..<config.nKV {
            var acc = [Double](repeating: 0, count: D)
            for w in (nWindow - used)..<nWindow {
                for j in 0..<D {
                    var sum = 0.0
                    for g in 0..<G {
                        sum += Double(qWindow[((h * G + g) * nWindow + w) * D + j])
                    }
                    let qbar = sum / Double(G)
                    acc[j] += qbar * qbar
                }
            }
            let qn = acc.map { Float($0.squareRoot()) }
            var total = 0.0
            for j in 0..<D { total += Double(qn[j]) }
            var c = Float(total / Double(D))
            if c == 0 { c = 1 }
            allQn.append(qn)
            allC.append(c)
        }
        return (allQn, allC)
    }

    /// Saliencies s_j = k_j^2 * qn_j in double.
    static func saliency(_ key: ArraySlice<Float>, qn: [Float]) -> [Double] {
        var s: [Double] = []
        s.reserveCapacity(qn.count)
        for (j, k) in key.enumerated() {
            s.append(Double(k) * Double(k) * Double(qn[j]))
        }
        return s
    }

    /// Channels in selection order: saliency descending, ties toward the lower index.
    static func selectionOrder(_ s: [Double]) -> [Int] {
        Array(0..<s.count).sorted { a, b in
            if s[a] != s[b] { return s[a] > s[b] }
            return a < b
        }
    }

    /// Number of channels kept for a token with saliencies `s`.
    static func keepCount(_ s: [Double], config: RefConfig) -> Int {
        let D = s.count
        if !config.cumulative { return config.topkKeep }
        var total = 0.0
        for x in s { total += x }
        let target = Double(config.p) * total
        let order = selectionOrder(s)
        var keep = D
        var running = 0.0
        for n in 0...D {
            if n > 0 { running += s[order[n - 1]] }
            if running >= target { keep = n; break }
        }
        let upper = config.maxKeep == 0 ? D : config.maxKeep
        return min(max(keep, config.minKeep), upper)
    }

    /// Kept-channel mask of a token.
    static func keptMask(_ s: [Double], config: RefConfig) -> [Bool] {
        let keep = keepCount(s, config: config)
        var mask = [Bool](repeating: false, count: s.count)
        for j in selectionOrder(s).prefix(keep) { mask[j] = true }
        return mask
    }

    /// Pack a boolean mask as the library does: bit j of byte j/8.
    static func packMask(_ mask: [Bool]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: (mask.count + 7) / 8)
        for (j, kept) in mask.enumerated() where kept { bytes[j / 8] |= UInt8(1) << UInt8(j % 8) }
        return bytes
    }

    /// Attention of one decode query over per-head keys/values, in double.
    /// keys[h] and values[h] are [n][D]; q is [nQ][D]. Returns [nQ][D].
    static func attention(q: [Float], keys: [[Float]], values: [[Float]], n: Int, config: RefConfig) -> [Double] {
        let D = config.D, G = config.group
        let scale = config.softmaxScale
        var out = [Double](repeating: 0, count: config.nQ * D)
        for qh in 0..<config.nQ {
            let h = qh / G
            let K = keys[h], V = values[h]
            var logits = [Double](repeating: 0, count: n)
            var maxLogit = -Double.infinity
            for t in 0..<n {
                var dot = 0.0
                for j in 0..<D { dot += Double(q[qh * D + j]) * Double(K[t * D + j]) }
                logits[t] = scale * dot
                maxLogit = max(maxLogit, logits[t])
            }
            var denom = 0.0
            for t in 0..<n {
                logits[t] = exp(logits[t] - maxLogit)
                denom += logits[t]
            }
            for t in 0..<n {
                let w = logits[t] / denom
                for j in 0..<D { out[qh * D + j] += w * Double(V[t * D + j]) }
            }
        }
        return out
    }
}

// MARK: - One compressed token

/// The reference's view of one stored prompt token of one KV head.
struct RefToken {
    var mask: [Bool]
    /// The key as attention sees it (kept values rounded, pruned entries recovered).
    var key: [Float]
    /// Exact (double, unquantised) statistics.
    var mean: Double
    var theta: Double
    var sd: Double
    /// The stored fp16 statistics read back: a = sqrt(m/c), e = sqrt(theta/c), b = sqrt(sd/c).
    var a: Double
    var e: Double
    var b: Double
    var keptCount: Int { mask.reduce(0) { $0 + ($1 ? 1 : 0) } }
}

extension RefMath {
    /// Compress one prompt key of (layer, head, token) and rebuild it as attention sees it.
    static func compress(key: ArraySlice<Float>, qn: [Float], c: Float, config: RefConfig,
                         layer: Int, head: Int, token: Int) -> RefToken {
        let D = config.D
        let k = Array(key)
        let s = saliency(key, qn: qn)
        let mask = keptMask(s, config: config)

        var prunedSum = 0.0, prunedCount = 0
        var minKept = Double.infinity, maxPruned = -Double.infinity
        for j in 0..<D {
            if mask[j] {
                minKept = min(minKept, s[j])
            } else {
                prunedSum += s[j]
                prunedCount += 1
                maxPruned = max(maxPruned, s[j])
            }
        }
        let m = prunedCount > 0 ? prunedSum / Double(prunedCount) : 0
        let theta = minKept.isFinite ? minKept : maxPruned
        var sq = 0.0
        for j in 0..<D where !mask[j] { sq += (s[j] - m) * (s[j] - m) }
        let sd = prunedCount > 0 ? (sq / Double(prunedCount)).squareRoot() : 0

        let a = storedStat(m, c: c)
        let e = storedStat(theta, c: c)
        let b = storedStat(sd, c: c)

        var out = [Float](repeating: 0, count: D)
        for j in 0..<D {
            if mask[j] {
                out[j] = config.keyPrecision.round(k[j])
                continue
            }
            let rq = recoveryRq(qn: qn[j], c: c)
            var mag: Float
            switch config.recovery {
            case .none:
                mag = 0
            case .mean:
                mag = Float(a) * rq
            case .gaussian:
                // sparkv.h's float32 sequence, one rounding per operation
                let z = normalPoints[drawBin(seed: config.seed, layer: layer, head: head, token: token, channel: j)]
                let fa = Float(a), fb = Float(b), fe = Float(e)
                let m = fa * fa, s2 = fb * fb, theta = fe * fe
                let sz = s2 * z
                let x = min(max(m + sz, 0), theta)
                mag = x.squareRoot() * rq
            case .exponential:
                let z = sqrtExponentialPoints[drawBin(seed: config.seed, layer: layer, head: head, token: token, channel: j)]
                let r = Float(a) * z
                mag = min(r, Float(e)) * rq
            }
            if config.signs && k[j] < 0 { mag = -mag }
            out[j] = mag
        }
        return RefToken(mask: mask, key: out, mean: m, theta: theta, sd: sd, a: a, e: e, b: b)
    }
}

// MARK: - One layer

/// Memory of a layer as the formula of common.md gives it.
struct RefMemory: Equatable, CustomStringConvertible {
    var nTokens: UInt64 = 0
    var keyBytes: UInt64 = 0
    var keyMetaBytes: UInt64 = 0
    var valueBytes: UInt64 = 0
    var totalBytes: UInt64 = 0
    var denseBytes: UInt64 = 0

    static func + (l: RefMemory, r: RefMemory) -> RefMemory {
        RefMemory(nTokens: l.nTokens + r.nTokens, keyBytes: l.keyBytes + r.keyBytes,
                  keyMetaBytes: l.keyMetaBytes + r.keyMetaBytes, valueBytes: l.valueBytes + r.valueBytes,
                  totalBytes: l.totalBytes + r.totalBytes, denseBytes: l.denseBytes + r.denseBytes)
    }

    /// The byte fields only (n_tokens zeroed).
    var bytesOnly: RefMemory {
        var m = self
        m.nTokens = 0
        return m
    }

    var description: String {
        "tokens=\(nTokens) key=\(keyBytes) meta=\(keyMetaBytes) value=\(valueBytes) total=\(totalBytes) dense=\(denseBytes)"
    }
}

/// A reference layer: prompt compressed at init, dense appends, double attention.
struct RefLayer {
    let config: RefConfig
    let layer: Int
    /// Per KV head window norms (zeros and 1 when not pruned).
    var qn: [[Float]]
    var c: [Float]
    /// keys[h] / values[h]: [n][D] as attention sees them.
    var keys: [[Float]]
    var values: [[Float]]
    /// Prompt tokens per head (only when compressed).
    var tokens: [[RefToken]]
    var promptTokens: Int
    var n: Int

    init(config: RefConfig, layer: Int, prompt: TestPrompt) {
        self.config = config
        self.layer = layer
        let D = config.D, n = prompt.n
        self.promptTokens = n
        self.n = n
        if config.prunes {
            let norms = RefMath.windowNorms(qWindow: prompt.qWindow, nWindow: prompt.nWindow, config: config)
            qn = norms.qn
            c = norms.c
        } else {
            qn = Array(repeating: [Float](repeating: 0, count: D), count: config.nKV)
            c = Array(repeating: 1, count: config.nKV)
        }
        keys = []
        values = []
        tokens = []
        for h in 0..<config.nKV {
            var hk = [Float](), hv = [Float]()
            hk.reserveCapacity(n * D)
            hv.reserveCapacity(n * D)
            var ht: [RefToken] = []
            for t in 0..<n {
                let base = (h * n + t) * D
                let k = prompt.keys[base..<(base + D)]
                if config.prunes {
                    let tok = RefMath.compress(key: k, qn: qn[h], c: c[h], config: config,
                                               layer: layer, head: h, token: t)
                    hk.append(contentsOf: tok.key)
                    ht.append(tok)
                } else {
                    hk.append(contentsOf: k.map { config.keyPrecision.round($0) })
                }
                hv.append(contentsOf: prompt.values[base..<(base + D)].map { config.valuePrecision.round($0) })
            }
            keys.append(hk)
            values.append(hv)
            tokens.append(ht)
        }
    }

    /// Append one dense token: k, v are [nKV][D].
    mutating func append(keys k: [Float], values v: [Float]) {
        let D = config.D
        for h in 0..<config.nKV {
            keys[h].append(contentsOf: k[(h * D)..<((h + 1) * D)].map { config.keyPrecision.round($0) })
            values[h].append(contentsOf: v[(h * D)..<((h + 1) * D)].map { config.valuePrecision.round($0) })
        }
        n += 1
    }

    func attend(_ q: [Float]) -> [Double] {
        RefMath.attention(q: q, keys: keys, values: values, n: n, config: config)
    }

    /// The key of (head, token) as attention sees it.
    func key(head: Int, token: Int) -> [Float] {
        Array(keys[head][(token * config.D)..<((token + 1) * config.D)])
    }

    /// The kept mask of (head, token); all ones for dense tokens.
    func mask(head: Int, token: Int) -> [Bool] {
        if config.prunes && token < promptTokens { return tokens[head][token].mask }
        return [Bool](repeating: true, count: config.D)
    }

    /// Memory per the formula of common.md.
    var memory: RefMemory {
        let D = config.D, H = config.nKV
        let kb = config.keyPrecision.bytes, vb = config.valuePrecision.bytes
        var m = RefMemory()
        m.nTokens = UInt64(n)
        if config.prunes {
            var kept = 0
            for h in 0..<H { for t in tokens[h] { kept += t.keptCount } }
            let appended = n - promptTokens
            m.keyBytes = UInt64(kept * kb + appended * H * D * kb)
            let perToken = D / 8 + (config.signs ? D / 8 : 0) + 2 * config.recovery.statCount
            m.keyMetaBytes = UInt64(promptTokens * H * perToken + H * (D * 4 + 4))
        } else {
            m.keyBytes = UInt64(n * H * D * kb)
            m.keyMetaBytes = 0
        }
        m.valueBytes = UInt64(n * H * D * vb)
        m.totalBytes = m.keyBytes + m.keyMetaBytes + m.valueBytes
        m.denseBytes = UInt64(n * H * D * 2 * 2)
        return m
    }
}
