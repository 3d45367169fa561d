// CacheHelpers.swift — thin helpers over the C API (import CSparKV) for the kernel tests.

import CSparKV
import Testing

extension RefPrecision {
    var c: sparkv_precision {
        switch self {
        case .f32: return SPARKV_F32
        case .f16: return SPARKV_F16
        case .bf16: return SPARKV_BF16
        }
    }
}

extension RefRecovery {
    var c: sparkv_recovery {
        switch self {
        case .none: return SPARKV_RECOVER_NONE
        case .mean: return SPARKV_RECOVER_MEAN
        case .gaussian: return SPARKV_RECOVER_GAUSSIAN
        case .exponential: return SPARKV_RECOVER_EXPONENTIAL
        }
    }
}

extension RefConfig {
    /// The C shape of this configuration.
    func shape(layers: Int = 1, capacity: Int = 1024) -> sparkv_shape {
        var s = sparkv_default_shape()
        s.n_layers = UInt32(layers)
        s.n_q_heads = UInt32(nQ)
        s.n_kv_heads = UInt32(nKV)
        s.head_dim = UInt32(D)
        s.capacity = UInt64(capacity)
        return s
    }

    /// The C policy of this configuration.
    var policy: sparkv_policy {
        var p = sparkv_default_policy()
        p.key_prune_ratio = r
        p.selection = cumulative ? SPARKV_SELECT_CUMULATIVE : SPARKV_SELECT_TOPK
        p.cumulative_p = self.p
        p.cumulative_min_keep = UInt32(minKeep)
        p.cumulative_max_keep = UInt32(maxKeep)
        p.recovery = recovery.c
        p.sign_bits = signs ? 1 : 0
        p.key_precision = keyPrecision.c
        p.value_precision = valuePrecision.c
        p.window = UInt32(window)
        p.seed = seed
        p.threads = Int32(threads)
        p.attention_scale = attentionScale
        return p
    }
}

/// Errors of the helpers (a failing status where success was expected).
struct CallFailed: Error, CustomStringConvertible {
    var what: String
    var status: sparkv_status
    var detail: String
    var description: String { "\(what) failed with status \(status.rawValue): \(detail)" }
}

/// String of sparkv_last_error.
func lastErrorText(_ cache: OpaquePointer?) -> String {
    String(cString: sparkv_last_error(cache))
}

/// Memory report as a Swift value (Equatable).
struct CMemory: Equatable, CustomStringConvertible {
    var nTokens, keyBytes, keyMetaBytes, valueBytes, totalBytes, denseBytes, reservedBytes: UInt64

    init(_ m: sparkv_memory) {
        nTokens = m.n_tokens
        keyBytes = m.key_bytes
        keyMetaBytes = m.key_meta_bytes
        valueBytes = m.value_bytes
        totalBytes = m.total_bytes
        denseBytes = m.dense_bytes
        reservedBytes = m.reserved_bytes
    }

    /// The fields the formula defines (everything but reserved).
    var formulaPart: RefMemory {
        RefMemory(nTokens: nTokens, keyBytes: keyBytes, keyMetaBytes: keyMetaBytes, valueBytes: valueBytes,
                  totalBytes: totalBytes, denseBytes: denseBytes)
    }

    var description: String { formulaPart.description + " reserved=\(reservedBytes)" }
}

/// An owned C cache handle, freed on deinit.
final class CCache {
    let handle: OpaquePointer
    let config: RefConfig
    let layers: Int

    init(_ config: RefConfig, layers: Int = 1, capacity: Int = 1024) throws {
        var shape = config.shape(layers: layers, capacity: capacity)
        var policy = config.policy
        var out: OpaquePointer? = nil
        let st = sparkv_cache_create(&shape, &policy, &out)
        guard st == SPARKV_OK, let h = out else {
            throw CallFailed(what: "sparkv_cache_create", status: st, detail: lastErrorText(nil))
        }
        handle = h
        self.config = config
        self.layers = layers
    }

    deinit { sparkv_cache_free(handle) }

    private func check(_ st: sparkv_status, _ what: String) throws {
        if st != SPARKV_OK {
            throw CallFailed(what: what, status: st, detail: lastErrorText(handle))
        }
    }

    /// Prefill a layer with a prompt; returns the status (no throw).
    @discardableResult
    func tryPrefill(layer: Int, _ p: TestPrompt) -> sparkv_status {
        p.keys.withUnsafeBufferPointer { k in
            p.values.withUnsafeBufferPointer { v in
                p.qWindow.withUnsafeBufferPointer { q in
                    sparkv_prefill(handle, UInt32(layer), k.baseAddress, v.baseAddress, UInt64(p.n),
                                   p.nWindow > 0 ? q.baseAddress : nil, UInt64(p.nWindow))
                }
            }
        }
    }

    func prefill(layer: Int, _ p: TestPrompt) throws {
        try check(tryPrefill(layer: layer, p), "sparkv_prefill(layer \(layer))")
    }

    func append(layer: Int, keys: [Float], values: [Float]) throws {
        let st = keys.withUnsafeBufferPointer { k in
            values.withUnsafeBufferPointer { v in sparkv_append(handle, UInt32(layer), k.baseAddress, v.baseAddress) }
        }
        try check(st, "sparkv_append(layer \(layer))")
    }

    func attend(layer: Int, _ q: [Float]) throws -> [Float] {
        var out = [Float](repeating: .nan, count: config.nQ * config.D)
        let st = q.withUnsafeBufferPointer { qp in
            out.withUnsafeMutableBufferPointer { op in sparkv_attend(handle, UInt32(layer), qp.baseAddress, op.baseAddress) }
        }
        try check(st, "sparkv_attend(layer \(layer))")
        return out
    }

    func memory(layer: UInt32 = SPARKV_ALL_LAYERS) throws -> CMemory {
        var m = sparkv_memory()
        m.struct_size = UInt64(MemoryLayout<sparkv_memory>.size)
        try check(sparkv_memory_report(handle, layer, &m), "sparkv_memory_report(\(layer))")
        return CMemory(m)
    }

    func tokens(layer: Int) -> Int { Int(sparkv_layer_tokens(handle, UInt32(layer))) }

    /// inspect_key: (mask bytes, key).
    func inspectKey(layer: Int, head: Int, token: Int) throws -> (mask: [UInt8], key: [Float]) {
        var mask = [UInt8](repeating: 0, count: config.D / 8)
        var key = [Float](repeating: .nan, count: config.D)
        try check(sparkv_inspect_key(handle, UInt32(layer), UInt32(head), UInt64(token), &mask, &key),
                  "sparkv_inspect_key")
        return (mask, key)
    }

    func inspectValue(layer: Int, head: Int, token: Int) throws -> [Float] {
        var value = [Float](repeating: .nan, count: config.D)
        try check(sparkv_inspect_value(handle, UInt32(layer), UInt32(head), UInt64(token), &value),
                  "sparkv_inspect_value")
        return value
    }

    func inspectQnorm(layer: Int, head: Int) throws -> (qn: [Float], c: Float) {
        var qn = [Float](repeating: .nan, count: config.D)
        var c: Float = .nan
        try check(sparkv_inspect_qnorm(handle, UInt32(layer), UInt32(head), &qn, &c), "sparkv_inspect_qnorm")
        return (qn, c)
    }

    func setKernel(_ k: sparkv_kernel) throws {
        try check(sparkv_cache_set_kernel(handle, k), "sparkv_cache_set_kernel(\(k.rawValue))")
    }
}

/// Build a cache and its reference for one layer (or several layers with the same prompt
/// generator), prefill, and append `appends` dense tokens.
struct CachePair {
    let cache: CCache
    var refs: [RefLayer]

    init(_ config: RefConfig, layers: Int = 1, n: Int, nWindow: Int, kind: KeyKind, seed: UInt64,
         appends: Int = 0, capacity: Int = 1024, tied: Bool = false) throws {
        cache = try CCache(config, layers: layers, capacity: capacity)
        refs = []
        for l in 0..<layers {
            let s = seed &+ UInt64(l) &* 1000
            let p = tied ? TestData.tiedPrompt(config: config, n: n, nWindow: nWindow, seed: s)
                         : TestData.prompt(config: config, n: n, nWindow: nWindow, kind: kind, seed: s)
            try cache.prefill(layer: l, p)
            var ref = RefLayer(config: config, layer: l, prompt: p)
            for a in 0..<appends {
                let tok = TestData.appendToken(config: config, seed: s &+ UInt64(a), kind: kind)
                try cache.append(layer: l, keys: tok.keys, values: tok.values)
                ref.append(keys: tok.keys, values: tok.values)
            }
            refs.append(ref)
        }
    }
}

/// Comparison helpers.
enum Compare {
    /// max |a - b| over elements.
    static func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        var m: Float = 0
        for i in a.indices {
            let d = abs(a[i] - b[i])
            if d.isNaN { return .infinity }
            m = max(m, d)
        }
        return m
    }

    static func maxAbsDiff(_ a: [Float], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        var m = 0.0
        for i in a.indices {
            let d = abs(Double(a[i]) - b[i])
            if d.isNaN { return .infinity }
            m = max(m, d)
        }
        return m
    }

    static func maxAbs(_ a: [Double]) -> Double { a.reduce(0) { max($0, abs($1)) } }
    static func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }

    /// Bitwise equality of two float arrays.
    static func bitwiseEqual(_ a: [Float], _ b: [Float]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }

    /// Index of the first element whose |a - b| exceeds rel * max(|b|, floor).
    static func firstMismatch(_ a: [Float], _ b: [Float], rel: Float, floor: Float) -> Int? {
        for i in a.indices {
            let tol = rel * max(abs(b[i]), floor)
            if !(abs(a[i] - b[i]) <= tol) { return i }
        }
        return nil
    }
}

/// Kernels the CPU/build supports, portable first.
func supportedKernelList() -> [sparkv_kernel] {
    [SPARKV_KERNEL_PORTABLE, SPARKV_KERNEL_AVX2, SPARKV_KERNEL_AVX512].filter { sparkv_kernel_supported($0) != 0 }
}
