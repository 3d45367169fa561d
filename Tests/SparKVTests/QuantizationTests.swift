// QuantizationTests.swift — I8/I4 storage of kept keys and values: the quantizer's grid and error
// bound, attention over quantized caches against the naive reference applied to the dequantized
// values, every SIMD kernel against the portable one, zero and outlier tokens, policy errors, the
// memory formula with scales, and thread-count invariance.

import CSparKV
import Foundation
import Testing

// MARK: - QuantReference (independent of csrc/: the formats as sparkv.h documents them)

/// Storage formats these tests use.
enum QFormat: String, Sendable, CaseIterable, CustomStringConvertible {
    case f16, i8, i4

    var c: sparkv_precision {
        switch self {
        case .f16: return SPARKV_F16
        case .i8: return SPARKV_I8
        case .i4: return SPARKV_I4
        }
    }

    var isQuantized: Bool { self != .f16 }
    /// Largest integer of the symmetric grid.
    var qmax: Float { self == .i8 ? 127 : 7 }
    /// Bytes of n values (I4 rounded up to a whole byte).
    func rowBytes(_ n: Int) -> Int {
        switch self {
        case .f16: return 2 * n
        case .i8: return n
        case .i4: return (n + 1) / 2
        }
    }
    /// Bytes of k fp16 scales (none for float formats).
    func scaleBytes(_ k: Int) -> Int { isQuantized ? 2 * k : 0 }
    var description: String { rawValue }
}

enum QuantRef {
    /// The scale of a run whose largest magnitude is amax: fp16(amax / Q). A quotient of 65520 or
    /// more would round to Inf: sparkv.h makes such inputs SPARKV_ERR_RANGE (see `storable`).
    static func scale(amax: Float, qmax: Float) -> Float {
        Float(Float16(amax / qmax))
    }

    /// Whether a run with largest magnitude amax can be stored (its scale is finite in fp16).
    static func storable(amax: Float, qmax: Float) -> Bool { amax / qmax < 65520 }

    /// One run sharing one scale: its integers and the scale (as a Float).
    static func quantizeRun(_ x: ArraySlice<Float>, qmax: Float) -> (q: [Int], scale: Float) {
        let amax = x.reduce(Float(0)) { max($0, abs($1)) }
        let s = scale(amax: amax, qmax: qmax)
        if s == 0 { return ([Int](repeating: 0, count: x.count), 0) }
        let q = x.map { Int(min(max(($0 / s).rounded(.toNearestOrEven), -qmax), qmax)) }
        return (q, s)
    }

    /// A row as attention sees it, one scale per `group` consecutive values (the last run may be
    /// shorter); f16 rows are rounded to fp16.
    static func stored(_ x: [Float], format: QFormat, group: Int) -> [Float] {
        if format == .f16 { return x.map { Float(Float16($0)) } }
        var out: [Float] = []
        out.reserveCapacity(x.count)
        var i = 0
        while i < x.count {
            let (q, s) = quantizeRun(x[i..<min(i + group, x.count)], qmax: format.qmax)
            out.append(contentsOf: q.map { s * Float($0) })
            i += group
        }
        return out
    }

    /// The documented round-trip bound of one value x of a run with largest magnitude amax:
    /// |x - s q| <= s/2, plus the clamp of a value pushed past the grid by the fp16 rounding of s;
    /// a scale that rounds to 0 stores 0.
    static func errorBound(x: Float, amax: Float, qmax: Float) -> Float {
        let s = scale(amax: amax, qmax: qmax)
        if s == 0 { return abs(x) }
        return s / 2 + max(0, abs(x) - qmax * s) + abs(x) * 0x1p-22
    }

    /// ThinK's channel set of a head: the T channels of largest (qn_j^2 / u) * (sum_t k_tj^2 / n).
    static func thinkMask(keys: ArraySlice<Float>, n: Int, D: Int, qn: [Float], used: Int, keep: Int) -> [Bool] {
        var k2 = [Double](repeating: 0, count: D)
        for t in 0..<n {
            for j in 0..<D {
                let k = Double(keys[keys.startIndex + t * D + j])
                k2[j] += k * k
            }
        }
        let score = (0..<D).map { (Double(qn[$0]) * Double(qn[$0]) / Double(used)) * (k2[$0] / Double(n)) }
        var mask = [Bool](repeating: false, count: D)
        for j in RefMath.selectionOrder(score).prefix(keep) { mask[j] = true }
        return mask
    }

    /// Value pruning of one token: kept mask (largest |v|, ties toward the lower index) and the fp16
    /// fill (mean of the pruned values, summed in channel order in double).
    static func valuePrune(_ v: ArraySlice<Float>, keep: Int) -> (mask: [Bool], fill: Float) {
        let mags = v.map { abs(Double($0)) }
        var mask = [Bool](repeating: false, count: v.count)
        for j in RefMath.selectionOrder(mags).prefix(keep) { mask[j] = true }
        var sum = 0.0, count = 0
        for (j, x) in v.enumerated() where !mask[j] { sum += Double(x); count += 1 }
        return (mask, Float(Float16(Float(count > 0 ? sum / Double(count) : 0))))
    }
}

// MARK: - One quantized cache configuration and its reference

struct QuantCase: Sendable, CustomStringConvertible {
    enum Keys: String, Sendable { case dense, spark, think }
    var keys: Keys
    var D: Int
    var group = 2
    var nKV = 2
    var r: Float = 0.8
    var recovery: RefRecovery = .mean
    var signs = true
    var cumulative = false
    var valuePrune: Float = 0
    var kFormat: QFormat
    var vFormat: QFormat
    var quantGroup: Int
    var kind: KeyKind = .random
    var n = 300
    var appends = 3
    var threads = 1

    var prunesKeys: Bool { keys != .dense }

    /// The reference configuration (f32 precisions: QuantRef applies the storage formats).
    var ref: RefConfig {
        RefConfig(nQ: group * nKV, nKV: nKV, D: D, r: prunesKeys ? r : 0, cumulative: keys == .spark && cumulative,
                  p: 0.85, recovery: keys == .think ? .none : recovery, signs: keys == .think ? false : signs,
                  keyPrecision: .f32, valuePrecision: .f32, window: 16, seed: 4321, threads: threads)
    }

    var policy: sparkv_policy {
        var p = ref.policy
        p.key_precision = kFormat.c
        p.value_precision = vFormat.c
        p.quant_group = UInt32(quantGroup)
        p.key_pruning = keys == .think ? SPARKV_KEYS_THINK : SPARKV_KEYS_SPARK
        p.value_prune_ratio = valuePrune
        return p
    }

    var keptValues: Int { D - Int((Double(valuePrune) * Double(D)).rounded(.down)) }

    var description: String {
        var s = "\(keys)"
        if keys == .spark { s += "(\(cumulative ? "cum" : "r=\(r)") \(recovery)\(signs ? "+signs" : ""))" }
        if keys == .think { s += "(r=\(r))" }
        if valuePrune > 0 { s += " vprune=\(valuePrune)" }
        return s + " D=\(D) G=\(group) K=\(kFormat) V=\(vFormat) g=\(quantGroup) \(kind) n=\(n)+\(appends) threads=\(threads)"
    }
}

/// The reference layer of a QuantCase: keys and values as attention sees them.
struct QuantRefLayer {
    let tc: QuantCase
    var keys: [[Float]]       // [nKV][tokens * D]
    var values: [[Float]]
    var keyMasks: [[[Bool]]]  // [nKV][token] kept key channels (all true for dense tokens)
    var n: Int

    init(_ tc: QuantCase, prompt: TestPrompt, appended: [(keys: [Float], values: [Float])]) {
        self.tc = tc
        let cfg = tc.ref, D = tc.D, n = prompt.n
        let norms = tc.prunesKeys ? RefMath.windowNorms(qWindow: prompt.qWindow, nWindow: prompt.nWindow, config: cfg)
                                  : (qn: [[Float]](), c: [Float]())
        keys = []
        values = []
        keyMasks = []
        for h in 0..<tc.nKV {
            var hk: [Float] = [], hv: [Float] = [], hm: [[Bool]] = []
            let think = tc.keys == .think
                ? QuantRef.thinkMask(keys: prompt.keys[(h * n * D)..<((h + 1) * n * D)], n: n, D: D, qn: norms.qn[h],
                                     used: min(cfg.window, prompt.nWindow), keep: cfg.topkKeep)
                : []
            for t in 0..<n {
                let base = (h * n + t) * D
                let k = Array(prompt.keys[base..<(base + D)])
                switch tc.keys {
                case .dense:
                    hk += QuantRef.stored(k, format: tc.kFormat, group: tc.quantGroup)
                    hm.append([Bool](repeating: true, count: D))
                case .spark:
                    // mask, statistics and recovered entries from the float key; kept values share one scale
                    let tok = RefMath.compress(key: k[...], qn: norms.qn[h], c: norms.c[h], config: cfg,
                                               layer: 0, head: h, token: t)
                    let kept = (0..<D).filter { tok.mask[$0] }.map { k[$0] }
                    var stored = QuantRef.stored(kept, format: tc.kFormat, group: max(kept.count, 1)).makeIterator()
                    hk += (0..<D).map { tok.mask[$0] ? stored.next()! : tok.key[$0] }
                    hm.append(tok.mask)
                case .think:
                    let kept = (0..<D).filter { think[$0] }.map { k[$0] }
                    var stored = QuantRef.stored(kept, format: tc.kFormat, group: kept.count).makeIterator()
                    hk += (0..<D).map { think[$0] ? stored.next()! : 0 }
                    hm.append(think)
                }
                let v = Array(prompt.values[base..<(base + D)])
                if tc.valuePrune > 0 {
                    let (mask, fill) = QuantRef.valuePrune(v[...], keep: tc.keptValues)
                    let kept = (0..<D).filter { mask[$0] }.map { v[$0] }
                    var stored = QuantRef.stored(kept, format: tc.vFormat, group: kept.count).makeIterator()
                    hv += (0..<D).map { mask[$0] ? stored.next()! : fill }
                } else {
                    hv += QuantRef.stored(v, format: tc.vFormat, group: tc.quantGroup)
                }
            }
            for a in appended {
                hk += QuantRef.stored(Array(a.keys[(h * D)..<((h + 1) * D)]), format: tc.kFormat, group: tc.quantGroup)
                hv += QuantRef.stored(Array(a.values[(h * D)..<((h + 1) * D)]), format: tc.vFormat, group: tc.quantGroup)
                hm.append([Bool](repeating: true, count: D))
            }
            keys.append(hk)
            values.append(hv)
            keyMasks.append(hm)
        }
        self.n = n + appended.count
    }

    func attend(_ q: [Float]) -> [Double] {
        RefMath.attention(q: q, keys: keys, values: values, n: n, config: tc.ref)
    }

    func key(_ h: Int, _ t: Int) -> [Float] { Array(keys[h][(t * tc.D)..<((t + 1) * tc.D)]) }
    func value(_ h: Int, _ t: Int) -> [Float] { Array(values[h][(t * tc.D)..<((t + 1) * tc.D)]) }

    /// sparkv_memory_report's byte fields per the formulas of sparkv.h.
    var memory: (key: UInt64, keyMeta: UInt64, value: UInt64, valueMeta: UInt64) {
        let D = tc.D, H = tc.nKV, prompt = n - tc.appends, g = tc.quantGroup
        let kf = tc.kFormat, vf = tc.vFormat
        var key = 0, keyMeta = 0, value = 0, valueMeta = 0
        for h in 0..<H {
            for t in 0..<n {
                let isPrompt = t < prompt
                let kept = keyMasks[h][t].reduce(0) { $0 + ($1 ? 1 : 0) }
                switch (isPrompt, tc.keys) {
                case (true, .spark):
                    key += kf.rowBytes(kept)
                    keyMeta += D / 8 + (tc.signs ? D / 8 : 0) + 2 * tc.recovery.statCount + kf.scaleBytes(1)
                case (true, .think):
                    key += kf.rowBytes(kept)
                    keyMeta += kf.scaleBytes(1)
                default:
                    key += kf.rowBytes(D)
                    keyMeta += kf.scaleBytes(D / g)
                }
                if isPrompt && tc.valuePrune > 0 {
                    value += vf.rowBytes(tc.keptValues)
                    valueMeta += D / 8 + 2 + vf.scaleBytes(1)
                } else {
                    value += vf.rowBytes(D)
                    valueMeta += vf.scaleBytes(D / g)
                }
            }
            if tc.keys == .spark { keyMeta += D * 4 + 4 }
            if tc.keys == .think { keyMeta += D / 8 }
        }
        return (UInt64(key), UInt64(keyMeta), UInt64(value), UInt64(valueMeta))
    }
}

// MARK: - A C cache with an arbitrary policy

final class QuantCache {
    let handle: OpaquePointer
    let tc: QuantCase

    init(_ tc: QuantCase, capacity: Int = 1200) throws {
        var shape = tc.ref.shape(capacity: capacity)
        var policy = tc.policy
        var out: OpaquePointer? = nil
        let st = sparkv_cache_create(&shape, &policy, &out)
        guard st == SPARKV_OK, let h = out else {
            throw CallFailed(what: "sparkv_cache_create(\(tc))", status: st, detail: lastErrorText(nil))
        }
        handle = h
        self.tc = tc
    }

    deinit { sparkv_cache_free(handle) }

    private func check(_ st: sparkv_status, _ what: String) throws {
        if st != SPARKV_OK { throw CallFailed(what: what, status: st, detail: lastErrorText(handle)) }
    }

    func prefill(_ p: TestPrompt) throws {
        let st = p.keys.withUnsafeBufferPointer { k in
            p.values.withUnsafeBufferPointer { v in
                p.qWindow.withUnsafeBufferPointer { q in
                    sparkv_prefill(handle, 0, k.baseAddress, v.baseAddress, UInt64(p.n),
                                   p.nWindow > 0 ? q.baseAddress : nil, UInt64(p.nWindow))
                }
            }
        }
        try check(st, "sparkv_prefill")
    }

    func append(keys: [Float], values: [Float]) throws {
        let st = keys.withUnsafeBufferPointer { k in
            values.withUnsafeBufferPointer { v in sparkv_append(handle, 0, k.baseAddress, v.baseAddress) }
        }
        try check(st, "sparkv_append")
    }

    func attend(_ q: [Float], kernel: sparkv_kernel) throws -> [Float] {
        try check(sparkv_cache_set_kernel(handle, kernel), "sparkv_cache_set_kernel")
        var out = [Float](repeating: .nan, count: tc.group * tc.nKV * tc.D)
        let st = q.withUnsafeBufferPointer { qp in
            out.withUnsafeMutableBufferPointer { op in sparkv_attend(handle, 0, qp.baseAddress, op.baseAddress) }
        }
        try check(st, "sparkv_attend")
        return out
    }

    func key(_ h: Int, _ t: Int) throws -> [Float] {
        var key = [Float](repeating: .nan, count: tc.D)
        try check(sparkv_inspect_key(handle, 0, UInt32(h), UInt64(t), nil, &key), "sparkv_inspect_key")
        return key
    }

    func value(_ h: Int, _ t: Int) throws -> [Float] {
        var value = [Float](repeating: .nan, count: tc.D)
        try check(sparkv_inspect_value(handle, 0, UInt32(h), UInt64(t), &value), "sparkv_inspect_value")
        return value
    }

    func memory() throws -> sparkv_memory {
        var m = sparkv_memory()
        m.struct_size = UInt64(MemoryLayout<sparkv_memory>.size)
        try check(sparkv_memory_report(handle, 0, &m), "sparkv_memory_report")
        return m
    }
}

/// A cache and its reference, with the inputs they were built from.
struct QuantPair {
    let cache: QuantCache
    let ref: QuantRefLayer
    let prompt: TestPrompt
    let appended: [(keys: [Float], values: [Float])]
}

extension QuantPair {
    /// The float input of one token (prompt or appended) of one head.
    func input(keys: Bool, head h: Int, token t: Int) -> [Float] {
        let D = ref.tc.D, n = prompt.n
        if t < n {
            let base = (h * n + t) * D
            return Array((keys ? prompt.keys : prompt.values)[base..<(base + D)])
        }
        let a = appended[t - n]
        return Array((keys ? a.keys : a.values)[(h * D)..<((h + 1) * D)])
    }
}

/// Build a cache and its reference; `edit` may change the prompt and appended tokens first.
private func makePair(_ tc: QuantCase, seed: UInt64 = 17,
                      edit: (inout TestPrompt, inout [(keys: [Float], values: [Float])]) -> Void = { _, _ in })
    throws -> QuantPair {
    var prompt = TestData.prompt(config: tc.ref, n: tc.n, nWindow: tc.prunesKeys ? 20 : 0, kind: tc.kind, seed: seed)
    var appended = (0..<tc.appends).map { TestData.appendToken(config: tc.ref, seed: seed &+ UInt64($0), kind: tc.kind) }
    edit(&prompt, &appended)
    let cache = try QuantCache(tc)
    try cache.prefill(prompt)
    for a in appended { try cache.append(keys: a.keys, values: a.values) }
    return QuantPair(cache: cache, ref: QuantRefLayer(tc, prompt: prompt, appended: appended), prompt: prompt,
                     appended: appended)
}

/// Every stored key and value (as inspect reports them) equals the reference: quantized values
/// bitwise, recovered (sampled or mean) entries to float rounding.
private func expectStoredMatchesReference(_ cache: QuantCache, _ ref: QuantRefLayer,
                                          sourceLocation: SourceLocation = #_sourceLocation) throws {
    var keyMismatch = 0, valueMismatch = 0
    var firstKey = "", firstValue = ""
    for h in 0..<ref.tc.nKV {
        for t in 0..<ref.n {
            let got = try cache.key(h, t), want = ref.key(h, t), mask = ref.keyMasks[h][t]
            for j in 0..<ref.tc.D {
                let ok = mask[j] ? got[j].bitPattern == want[j].bitPattern
                                 : abs(got[j] - want[j]) <= 1e-6 * max(abs(want[j]), 1e-6)
                if !ok {
                    if keyMismatch == 0 { firstKey = "head \(h) token \(t) channel \(j): \(got[j]) vs \(want[j])" }
                    keyMismatch += 1
                }
            }
            let gv = try cache.value(h, t), wv = ref.value(h, t)
            if !Compare.bitwiseEqual(gv, wv) {
                if valueMismatch == 0 {
                    let j = (0..<gv.count).first { gv[$0].bitPattern != wv[$0].bitPattern }!
                    firstValue = "head \(h) token \(t) channel \(j): \(gv[j]) vs \(wv[j])"
                }
                valueMismatch += 1
            }
        }
    }
    #expect(keyMismatch == 0, "\(ref.tc): \(keyMismatch) key entries differ, first \(firstKey)", sourceLocation: sourceLocation)
    #expect(valueMismatch == 0, "\(ref.tc): \(valueMismatch) value rows differ, first \(firstValue)",
            sourceLocation: sourceLocation)
}

/// Attend with every supported kernel: each equals the reference over the dequantized cache, and the
/// SIMD kernels equal the portable one, to float rounding (1e-5 of the output scale).
private func expectAttentionMatchesReference(_ cache: QuantCache, _ ref: QuantRefLayer, queries: Int = 2,
                                             queryScale: Float? = nil,
                                             sourceLocation: SourceLocation = #_sourceLocation) throws {
    for i in 0..<queries {
        let q = TestData.query(config: ref.tc.ref, seed: 300 &+ UInt64(i),
                               scale: queryScale ?? TestData.queryScale(ref.tc.kind))
        let want = ref.attend(q)
        let scale = max(Compare.maxAbs(want), 1e-3)
        let portable = try cache.attend(q, kernel: SPARKV_KERNEL_PORTABLE)
        for kernel in supportedKernelList() {
            let got = try cache.attend(q, kernel: kernel)
            let name = String(cString: sparkv_kernel_name(kernel))
            #expect(got.allSatisfy { $0.isFinite }, "\(ref.tc) \(name): non-finite output", sourceLocation: sourceLocation)
            let diff = Compare.maxAbsDiff(got, want)
            #expect(diff <= 1e-5 * scale, "\(ref.tc) \(name) query \(i): max |diff| \(diff) vs reference, scale \(scale)",
                    sourceLocation: sourceLocation)
            let vsPortable = Double(Compare.maxAbsDiff(got, portable))
            #expect(vsPortable <= 1e-5 * scale,
                    "\(ref.tc) \(name) query \(i): max |diff| \(vsPortable) vs portable, scale \(scale)",
                    sourceLocation: sourceLocation)
        }
    }
}

// MARK: - Tests

@Suite("Quantization")
struct QuantizationTests {
    // MARK: quantizer

    struct RoundTripCase: Sendable, CustomStringConvertible {
        var format: QFormat
        var D: Int
        var quantGroup: Int
        var description: String { "\(format) D=\(D) g=\(quantGroup)" }
    }

    static let roundTripCases: [RoundTripCase] = [
        RoundTripCase(format: .i8, D: 64, quantGroup: 32), RoundTripCase(format: .i8, D: 128, quantGroup: 8),
        RoundTripCase(format: .i8, D: 40, quantGroup: 40), RoundTripCase(format: .i4, D: 64, quantGroup: 16),
        RoundTripCase(format: .i4, D: 128, quantGroup: 128), RoundTripCase(format: .i4, D: 40, quantGroup: 8),
    ]

    @Test("stored values sit on the grid s*q with |x - s q| <= s/2, scales fp16(amax/Q)", arguments: roundTripCases)
    func quantizedRowsRoundTripWithinHalfAStep(_ tc: RoundTripCase) throws {
        // Dense keys and values over twelve decades of magnitude per token, from scales that round
        // to 0 or to fp16 subnormals up to |x| ~ 1e3, so the scale's own rounding and the clamp occur.
        let cfg = QuantCase(keys: .dense, D: tc.D, group: 1, nKV: 2, kFormat: tc.format, vFormat: tc.format,
                            quantGroup: tc.quantGroup, n: 260, appends: 2)
        let pair = try makePair(cfg) { prompt, appended in
            var rng = TestRNG(seed: 5)
            for t in 0..<(prompt.keys.count / tc.D) {
                let mag = Float(pow(10.0, -9 + 12 * rng.unit()))
                for j in 0..<tc.D {
                    prompt.keys[t * tc.D + j] *= mag
                    prompt.values[t * tc.D + j] *= mag * 0.5
                }
            }
            appended[0].keys = appended[0].keys.map { $0 * 1e-8 }
        }
        // the library stores exactly the reference's grid values ...
        try expectStoredMatchesReference(pair.cache, pair.ref)
        // ... and those are within the bound of the float inputs
        let qmax = tc.format.qmax, D = tc.D
        var worst: Float = 0, checked = 0, zeroScales = 0, subnormalScales = 0
        for h in 0..<2 {
            for t in 0..<pair.ref.n {
                let k: [Float] = pair.input(keys: true, head: h, token: t)
                let v: [Float] = pair.input(keys: false, head: h, token: t)
                let sk: [Float] = try pair.cache.key(h, t)
                let sv: [Float] = try pair.cache.value(h, t)
                for (x, stored) in [(k, sk), (v, sv)] {
                    for g0 in stride(from: 0, to: D, by: tc.quantGroup) {
                        let run = x[g0..<(g0 + tc.quantGroup)]
                        let amax = run.reduce(Float(0)) { max($0, abs($1)) }
                        let s = QuantRef.scale(amax: amax, qmax: qmax)
                        // the scale is amax/Q to fp16 precision
                        #expect(abs(s - amax / qmax) <= (amax / qmax) * 0x1p-11 + 0x1p-25)
                        if s == 0 { zeroScales += 1 } else if s < 0x1p-14 { subnormalScales += 1 }
                        for j in g0..<(g0 + tc.quantGroup) {
                            let err = abs(x[j] - stored[j])
                            #expect(err <= QuantRef.errorBound(x: x[j], amax: amax, qmax: qmax),
                                    "\(tc) x \(x[j]) stored \(stored[j]), amax \(amax), scale \(s)")
                            if s > 0 {
                                let q = stored[j] / s
                                #expect(q == q.rounded() && abs(q) <= qmax, "\(tc): \(stored[j]) is not on the grid of \(s)")
                                if s >= 0x1p-14 { worst = max(worst, err / s) }
                            } else {
                                #expect(stored[j] == 0)
                            }
                            checked += 1
                        }
                    }
                }
            }
        }
        #expect(checked == 2 * 2 * pair.ref.n * D)
        #expect(zeroScales > 0 && subnormalScales > 0, "\(tc): the data should reach zero and subnormal scales")
        // normal scales: half a step, plus at most Q * 2^-11 steps of clamp
        #expect(worst <= 0.5 + qmax * 0x1p-10, "\(tc): worst error \(worst) steps")
    }

    @Test("I4 rows pack two values per byte; odd kept counts round up to a whole byte per token")
    func i4RowsAreWholeBytesPerToken() throws {
        // ThinK with r = 0.7: T = 39 (D = 128, odd) and 20 (D = 64); value pruning with r_v = 0.3:
        // T_v = 90 (D = 128) and 45 (D = 64, odd).
        for D in [128, 64] {
            let tc = QuantCase(keys: .think, D: D, r: 0.7, valuePrune: 0.3, kFormat: .i4, vFormat: .i4, quantGroup: 32,
                               n: 270, appends: 1)
            let pair = try makePair(tc)
            let m = try pair.cache.memory()
            let T = tc.ref.topkKeep
            #expect(m.key_bytes == UInt64(2 * ((tc.n * ((T + 1) / 2)) + tc.appends * D / 2)))
            #expect(m.value_bytes == UInt64(2 * (tc.n * ((tc.keptValues + 1) / 2) + tc.appends * D / 2)))
            try expectStoredMatchesReference(pair.cache, pair.ref)
            try expectAttentionMatchesReference(pair.cache, pair.ref, queries: 1)
        }
    }

    // MARK: attention

    static let attentionCases: [QuantCase] = {
        var out: [QuantCase] = []
        for D in [64, 128, 40] {
            let g = D == 40 ? 8 : 32
            for f in [QFormat.i8, .i4] {
                let other: QFormat = f == .i8 ? .i4 : .i8
                out.append(QuantCase(keys: .dense, D: D, group: 4, kFormat: f, vFormat: f, quantGroup: g))
                out.append(QuantCase(keys: .dense, D: D, group: 3, kFormat: f, vFormat: other, quantGroup: D == 40 ? 40 : 8,
                                     kind: .outlier))
                out.append(QuantCase(keys: .dense, D: D, group: 1, kFormat: .f16, vFormat: f, quantGroup: D))
                out.append(QuantCase(keys: .spark, D: D, group: 4, r: 0.8, kFormat: f, vFormat: f, quantGroup: g))
                out.append(QuantCase(keys: .spark, D: D, group: 2, r: 0.5, recovery: .none, signs: false, kFormat: f,
                                     vFormat: .f16, quantGroup: g, kind: .outlier))
                out.append(QuantCase(keys: .spark, D: D, group: 3, recovery: .mean, signs: false, cumulative: true,
                                     kFormat: f, vFormat: f, quantGroup: g, kind: .outlier))
                out.append(QuantCase(keys: .spark, D: D, group: 2, r: 0.7, recovery: .gaussian, kFormat: f, vFormat: other,
                                     quantGroup: g))
                out.append(QuantCase(keys: .think, D: D, group: 4, r: 0.7, recovery: .none, signs: false, kFormat: f,
                                     vFormat: f, quantGroup: g))
                out.append(QuantCase(keys: .spark, D: D, group: 4, r: 0.8, valuePrune: 0.3, kFormat: f, vFormat: f,
                                     quantGroup: g))
                out.append(QuantCase(keys: .dense, D: D, group: 1, valuePrune: 0.5, kFormat: .f16, vFormat: f,
                                     quantGroup: g, kind: .outlier))
            }
        }
        return out
    }()

    @Test("attention over a quantized cache equals the reference over the dequantized values, every kernel",
          arguments: attentionCases)
    func attentionMatchesDequantizedReference(_ tc: QuantCase) throws {
        let pair = try makePair(tc)
        try expectStoredMatchesReference(pair.cache, pair.ref)
        try expectAttentionMatchesReference(pair.cache, pair.ref)
    }

    @Test("groups of query heads larger than the SIMD kernels hold fall back to portable correctly")
    func largeGroupsUsePortableKernels() throws {
        let tc = QuantCase(keys: .spark, D: 64, group: 17, nKV: 1, r: 0.8, kFormat: .i8, vFormat: .i4, quantGroup: 16,
                           n: 100, appends: 2)
        let pair = try makePair(tc)
        try expectAttentionMatchesReference(pair.cache, pair.ref, queries: 1)
    }

    // MARK: scales at the extremes

    @Test("all-zero tokens, |k| ~ 1e4 outliers and values at the top of the scale range give finite scales, keys, values and outputs",
          arguments: [QFormat.i8, .i4])
    func zeroAndOutlierTokensStayFinite(_ f: QFormat) throws {
        let shapes: [(QuantCase.Keys, Float)] = [(.dense, 0), (.spark, 0), (.think, 0), (.spark, 0.5), (.dense, 0.5)]
        for (keys, rv) in shapes {
            for D in [64, 40] {
                let tc = QuantCase(keys: keys, D: D, group: 2, r: keys == .think ? 0.5 : 0.75,
                                   recovery: keys == .think ? .none : .mean, signs: keys != .think, valuePrune: rv,
                                   kFormat: f, vFormat: f, quantGroup: 8, n: 280, appends: 3)
                let pair = try makePair(tc) { prompt, appended in
                    let n = prompt.n
                    for h in 0..<2 {
                        for t in 0..<n {
                            let base = (h * n + t) * D
                            if t % 9 == 4 {          // an all-zero token
                                for j in 0..<D { prompt.keys[base + j] = 0; prompt.values[base + j] = 0 }
                            } else if t % 9 == 7 {   // a huge-outlier token: one channel ~ 1e4
                                prompt.keys[base + (t % D)] = t % 2 == 0 ? 1.2e4 : -9.7e3
                                prompt.values[base + ((t + 3) % D)] = -1.1e4
                            } else if t == 100 {     // the largest scale: amax / Q just below 65520
                                prompt.values[base + 1] = f.qmax * 65500
                            }
                        }
                    }
                    appended[0].keys = [Float](repeating: 0, count: 2 * D)
                    appended[0].values = [Float](repeating: 0, count: 2 * D)
                    appended[1].keys[2] = 1.5e4
                    appended[1].values[D + 5] = -1.3e4
                }
                for h in 0..<2 {
                    for t in 0..<pair.ref.n {
                        let k = try pair.cache.key(h, t), v = try pair.cache.value(h, t)
                        #expect(k.allSatisfy { $0.isFinite } && v.allSatisfy { $0.isFinite }, "\(tc) head \(h) token \(t)")
                    }
                }
                // the top of the range: scale fp16(65500) = 65504, q = Q
                #expect(QuantRef.storable(amax: f.qmax * 65500, qmax: f.qmax))
                let top = try pair.cache.value(0, 100)
                #expect(top[1] == f.qmax * 65504, "\(tc): value at the top of the range \(top[1])")
                try expectStoredMatchesReference(pair.cache, pair.ref)
                // queries scaled down so the 1e4 channels give O(1) logits
                try expectAttentionMatchesReference(pair.cache, pair.ref, queries: 1, queryScale: 0.01)
            }
        }
    }

    @Test("a value whose scale would round to Inf in fp16 (amax / Q >= 65520) is SPARKV_ERR_RANGE, nothing stored",
          arguments: [QFormat.i8, .i4])
    func valuesBeyondTheScaleRangeAreRangeErrors(_ f: QFormat) throws {
        for keys in [QuantCase.Keys.dense, .spark] {
            let tc = QuantCase(keys: keys, D: 64, kFormat: f, vFormat: f, quantGroup: 8, n: 40, appends: 0)
            #expect(!QuantRef.storable(amax: f.qmax * 65520, qmax: f.qmax))
            for (what, x) in [("key", f.qmax * 65520), ("value", -f.qmax * 70000)] {
                var prompt = TestData.prompt(config: tc.ref, n: tc.n, nWindow: tc.prunesKeys ? 20 : 0, kind: .random, seed: 5)
                if what == "key" { prompt.keys[7 * 64 + 3] = x } else { prompt.values[11 * 64 + 9] = x }
                let cache = try QuantCache(tc)
                do {
                    try cache.prefill(prompt)
                    Issue.record("\(tc): a \(what) of \(x) was stored")
                } catch let e as CallFailed {
                    #expect(e.status == SPARKV_ERR_RANGE, "\(tc) \(what): \(e)")
                }
                var m = try cache.memory()
                #expect(m.n_tokens == 0 && m.total_bytes == 0, "\(tc) \(what): the failed prefill stored something")
                // the layer is still empty: the same prompt within range goes in
                if what == "key" { prompt.keys[7 * 64 + 3] = f.qmax * 65500 } else { prompt.values[11 * 64 + 9] = -f.qmax * 65500 }
                try cache.prefill(prompt)
                m = try cache.memory()
                #expect(m.n_tokens == UInt64(tc.n))
            }
        }
    }

    // MARK: errors

    @Test("bad quant_group or an unknown precision is an error and leaves no cache")
    func invalidQuantizationPoliciesAreRejected() {
        var shape = RefConfig(nQ: 2, nKV: 1, D: 64).shape()
        let base = sparkv_default_policy()
        #expect(base.quant_group == 32)
        var cases: [(String, sparkv_policy, UInt32)] = []
        func add(_ name: String, D: UInt32 = 64, _ f: (inout sparkv_policy) -> Void) {
            var p = base
            f(&p)
            cases.append((name, p, D))
        }
        add("I8 keys, quant_group 0") { $0.key_precision = SPARKV_I8; $0.quant_group = 0 }
        add("I8 values, quant_group 12") { $0.value_precision = SPARKV_I8; $0.quant_group = 12 }
        add("I4 keys, quant_group 4") { $0.key_precision = SPARKV_I4; $0.quant_group = 4 }
        add("I4 values, quant_group 48 does not divide 64") { $0.value_precision = SPARKV_I4; $0.quant_group = 48 }
        add("I8 keys, quant_group 128 > D") { $0.key_precision = SPARKV_I8; $0.quant_group = 128 }
        add("I8 keys, default 32 does not divide D = 40", D: 40) { $0.key_precision = SPARKV_I8 }
        add("I4 SparK keys, quant_group 20", D: 40) {
            $0.key_prune_ratio = 0.5; $0.key_precision = SPARKV_I4; $0.quant_group = 20
        }
        add("key precision 5") { $0.key_precision = sparkv_precision(rawValue: 5) }
        add("value precision 5") { $0.value_precision = sparkv_precision(rawValue: 5) }
        add("key precision ~0") { $0.key_precision = sparkv_precision(rawValue: ~0) }
        for (name, p, D) in cases {
            var policy = p
            shape.head_dim = D
            var out: OpaquePointer? = OpaquePointer(bitPattern: 0x1)
            let st = sparkv_cache_create(&shape, &policy, &out)
            #expect(st == SPARKV_ERR_INVALID_POLICY, "\(name): create returned \(st.rawValue)")
            #expect(out == nil, "\(name): a cache was left behind")
            #expect(!lastErrorText(nil).isEmpty, "\(name): no error detail")
            if out != nil { sparkv_cache_free(out) }
            #expect(sparkv_policy_validate(&policy, D) == SPARKV_ERR_INVALID_POLICY, "\(name): validate")
        }
        // quant_group is ignored without a quantized precision, and any divisor of D works with one
        var ignored = base
        ignored.quant_group = 12
        #expect(sparkv_policy_validate(&ignored, 40) == SPARKV_OK)
        for g: UInt32 in [8, 16, 32, 64] {
            var ok = base
            ok.key_precision = SPARKV_I4
            ok.value_precision = SPARKV_I8
            ok.quant_group = g
            #expect(sparkv_policy_validate(&ok, 64) == SPARKV_OK, "quant_group \(g): \(lastErrorText(nil))")
        }
    }

    // MARK: memory

    static let memoryCases: [QuantCase] = {
        var out: [QuantCase] = []
        for f in [QFormat.i8, .i4] {
            out.append(QuantCase(keys: .dense, D: 128, kFormat: f, vFormat: f, quantGroup: 32, n: 300, appends: 5))
            out.append(QuantCase(keys: .spark, D: 128, r: 0.8, kFormat: f, vFormat: f, quantGroup: 32, n: 520, appends: 2))
            out.append(QuantCase(keys: .spark, D: 64, recovery: .gaussian, signs: false, cumulative: true, kFormat: f,
                                 vFormat: .f16, quantGroup: 16, n: 270, appends: 3))
            out.append(QuantCase(keys: .think, D: 40, r: 0.7, recovery: .none, signs: false, kFormat: f, vFormat: f,
                                 quantGroup: 8, n: 300, appends: 1))
            out.append(QuantCase(keys: .spark, D: 64, r: 0.5, recovery: .exponential, valuePrune: 0.3, kFormat: .f16,
                                 vFormat: f, quantGroup: 64, n: 260, appends: 4))
        }
        return out
    }()

    @Test("memory report equals the byte formula with quantized payload and fp16 scales", arguments: memoryCases)
    func memoryReportCountsQuantizedBytesAndScales(_ tc: QuantCase) throws {
        let pair = try makePair(tc)
        let m = try pair.cache.memory()
        let want = pair.ref.memory
        #expect(m.key_bytes == want.key, "\(tc): key_bytes \(m.key_bytes) vs \(want.key)")
        #expect(m.key_meta_bytes == want.keyMeta, "\(tc): key_meta_bytes \(m.key_meta_bytes) vs \(want.keyMeta)")
        #expect(m.value_bytes == want.value, "\(tc): value_bytes \(m.value_bytes) vs \(want.value)")
        #expect(m.value_meta_bytes == want.valueMeta, "\(tc): value_meta_bytes \(m.value_meta_bytes) vs \(want.valueMeta)")
        #expect(m.total_bytes == want.key + want.keyMeta + want.value + want.valueMeta)
        #expect(m.dense_bytes == UInt64(pair.ref.n * tc.nKV * tc.D * 4))
        #expect(m.reserved_bytes >= m.total_bytes)
    }

    @Test("the header's example: D = 128, SparK r = 0.8 MEAN + signs is 62 (int8) / 49 (int4) key bytes per token")
    func headerByteExampleHolds() throws {
        for (f, keyBytes, valueBytes) in [(QFormat.i8, 62, 136), (.i4, 49, 72)] {
            let tc = QuantCase(keys: .spark, D: 128, nKV: 1, r: 0.8, kFormat: f, vFormat: f, quantGroup: 32, n: 256,
                               appends: 0)
            let m = try makePair(tc).cache.memory()
            let qnAndC = UInt64(128 * 4 + 4)
            #expect((m.key_bytes + m.key_meta_bytes - qnAndC) == UInt64(256 * keyBytes), "\(f)")
            #expect((m.value_bytes + m.value_meta_bytes) == UInt64(256 * valueBytes), "\(f)")
        }
    }

    // MARK: determinism

    static let threadCases: [QuantCase] = [
        QuantCase(keys: .spark, D: 128, group: 4, r: 0.8, kFormat: .i8, vFormat: .i8, quantGroup: 32, n: 700, appends: 3),
        QuantCase(keys: .spark, D: 64, group: 2, r: 0.5, valuePrune: 0.3, kFormat: .i4, vFormat: .i4, quantGroup: 8,
                  kind: .outlier, n: 600, appends: 2),
        QuantCase(keys: .dense, D: 40, group: 3, kFormat: .i4, vFormat: .i8, quantGroup: 8, n: 650, appends: 4),
        QuantCase(keys: .think, D: 128, group: 4, r: 0.7, recovery: .none, signs: false, kFormat: .i8, vFormat: .i4,
                  quantGroup: 64, n: 560, appends: 1),
    ]

    @Test("quantized attention is bit-identical for 1 and 2 threads, every kernel", arguments: threadCases)
    func quantizedAttendIsUnchangedByThreadCount(_ tc: QuantCase) throws {
        var one = tc, two = tc
        one.threads = 1
        two.threads = 2
        let a = try makePair(one).cache
        let b = try makePair(two)
        for kernel in supportedKernelList() {
            for i in 0..<2 {
                let q = TestData.query(config: tc.ref, seed: UInt64(i), scale: TestData.queryScale(tc.kind))
                let x = try a.attend(q, kernel: kernel), y = try b.cache.attend(q, kernel: kernel)
                #expect(Compare.bitwiseEqual(x, y),
                        "\(tc) \(String(cString: sparkv_kernel_name(kernel))): 1 vs 2 threads differ by \(Compare.maxAbsDiff(x, y))")
            }
        }
        try expectAttentionMatchesReference(b.cache, b.ref, queries: 1)
    }
}
