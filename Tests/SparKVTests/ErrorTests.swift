// ErrorTests.swift — every failure returns its status code, sets a detail message and leaves the
// cache exactly as it was.

@testable import SparKV
import CSparKV
import Testing

// MARK: - Raw calls with optional (possibly NULL) buffers

private func withOptionalPointer<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress) }
}

private func rawPrefill(_ cache: OpaquePointer?, layer: Int, keys: [Float]?, values: [Float]?, n: Int,
                        q: [Float]?, nWindow: Int) -> sparkv_status {
    withOptionalPointer(keys) { k in
        withOptionalPointer(values) { v in
            withOptionalPointer(q) { qp in
                sparkv_prefill(cache, UInt32(layer), k, v, UInt64(n), qp, UInt64(nWindow))
            }
        }
    }
}

private func rawAppend(_ cache: OpaquePointer?, layer: Int, keys: [Float]?, values: [Float]?) -> sparkv_status {
    withOptionalPointer(keys) { k in withOptionalPointer(values) { v in sparkv_append(cache, UInt32(layer), k, v) } }
}

private func rawAttend(_ cache: OpaquePointer?, layer: Int, q: [Float]?, outCount: Int?) -> sparkv_status {
    withOptionalPointer(q) { qp in
        guard let outCount else { return sparkv_attend(cache, UInt32(layer), qp, nil) }
        var out = [Float](repeating: 0, count: outCount)
        return sparkv_attend(cache, UInt32(layer), qp, &out)
    }
}

// MARK: - Fixture

/// Everything observable about the fixture cache.
private struct Snapshot: Equatable {
    var memories: [CMemory]
    var tokens: [Int]
    var outputs: [[UInt32]]
    var qnorms: [[UInt32]]
    var keys: [[UInt32]]
}

/// A 3-layer cache with capacity 102: layer 0 full (100-token prompt + 2 appends), layer 1 empty,
/// layer 2 holding a 50-token prompt.
private final class Fixture {
    let cfg = RefConfig(nQ: 4, nKV: 2, D: 64, r: 0.5, recovery: .gaussian, window: 8, seed: 1)
    let cache: CCache
    let prompt: TestPrompt   // a valid 50-token prompt for layer 1
    let query: [Float]
    let token: (keys: [Float], values: [Float])

    var h: OpaquePointer { cache.handle }

    init() throws {
        cache = try CCache(cfg, layers: 3, capacity: 102)
        try cache.prefill(layer: 0, TestData.prompt(config: cfg, n: 100, nWindow: 8, kind: .random, seed: 1))
        for a in 0..<2 {
            let t = TestData.appendToken(config: cfg, seed: UInt64(a))
            try cache.append(layer: 0, keys: t.keys, values: t.values)
        }
        try cache.prefill(layer: 2, TestData.prompt(config: cfg, n: 50, nWindow: 8, kind: .outlier, seed: 2))
        prompt = TestData.prompt(config: cfg, n: 50, nWindow: 8, kind: .random, seed: 3)
        query = TestData.query(config: cfg, seed: 4)
        token = TestData.appendToken(config: cfg, seed: 9)
    }

    func snapshot() throws -> Snapshot {
        var mems = [try cache.memory()]
        for l in 0..<3 { mems.append(try cache.memory(layer: UInt32(l))) }
        let outs = [try cache.attend(layer: 0, query), try cache.attend(layer: 2, query)]
        var qns: [[UInt32]] = []
        for l in 0..<3 { for hd in 0..<2 { qns.append(try cache.inspectQnorm(layer: l, head: hd).qn.map(\.bitPattern)) } }
        let keys = [try cache.inspectKey(layer: 0, head: 1, token: 101).key, try cache.inspectKey(layer: 2, head: 0, token: 49).key]
        return Snapshot(memories: mems, tokens: (0..<3).map { cache.tokens(layer: $0) },
                        outputs: outs.map { $0.map(\.bitPattern) }, qnorms: qns, keys: keys.map { $0.map(\.bitPattern) })
    }

    /// Run a failing call; check its code, its detail message and that nothing changed.
    func expectFailure(_ name: String, _ expected: sparkv_status, hasHandle: Bool = true,
                       _ call: (OpaquePointer) -> sparkv_status,
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let before = try snapshot()
        let st = call(h)
        #expect(st == expected, "\(name): got \(st.rawValue) want \(expected.rawValue) (\(lastErrorText(h)))",
                sourceLocation: sourceLocation)
        if hasHandle {
            #expect(!lastErrorText(h).isEmpty, "\(name): sparkv_last_error is empty", sourceLocation: sourceLocation)
        }
        let after = try snapshot()
        #expect(after == before, "\(name): the cache changed", sourceLocation: sourceLocation)
    }

    /// After all failures the fixture still accepts valid calls.
    func expectStillUsable() throws {
        try cache.prefill(layer: 1, prompt)
        #expect(cache.tokens(layer: 1) == 50)
        try cache.append(layer: 2, keys: token.keys, values: token.values)
        #expect(cache.tokens(layer: 2) == 51)
        #expect(cache.tokens(layer: 0) == 102)
    }
}

private func poisoned(_ a: [Float], at i: Int, _ x: Float) -> [Float] {
    var b = a
    b[i] = x
    return b
}

// MARK: - Tests

@Suite("Errors")
struct ErrorTests {
    @Test("version number and string agree with the header")
    func versionIsReported() {
        let want = UInt32(SPARKV_VERSION_MAJOR * 10000 + SPARKV_VERSION_MINOR * 100 + SPARKV_VERSION_PATCH)
        #expect(sparkv_version() == want)
        #expect(String(cString: sparkv_version_string()) == "\(SPARKV_VERSION_MAJOR).\(SPARKV_VERSION_MINOR).\(SPARKV_VERSION_PATCH)")
    }

    @Test("every status code 0...20 has a distinct non-empty sentence, and a Swift case")
    func statusStringsAreDistinct() {
        var seen = Set<String>()
        for code in UInt32(0)...20 {
            if code > 0, let error = SparKVError(status: sparkv_status(rawValue: code), detail: "") {
                if case .unknown = error { Issue.record("code \(code) has no SparKVError case") }
                #expect(error.status == Int32(code))
            }
            let s = String(cString: sparkv_status_string(sparkv_status(rawValue: code)))
            #expect(!s.isEmpty, "code \(code)")
            #expect(!seen.contains(s), "code \(code) repeats \"\(s)\"")
            seen.insert(s)
        }
        #expect(!String(cString: sparkv_status_string(sparkv_status(rawValue: 99))).isEmpty)
    }

    // MARK: create / policy_validate

    private static func expectCreateFails(_ name: String, _ expected: sparkv_status,
                                          shape: sparkv_shape, policy: sparkv_policy, checkValidate: Bool = false,
                                          sourceLocation: SourceLocation = #_sourceLocation) {
        var s = shape, p = policy
        var out: OpaquePointer? = OpaquePointer(bitPattern: 0x1234)
        let st = sparkv_cache_create(&s, &p, &out)
        #expect(st == expected, "\(name): got \(st.rawValue) want \(expected.rawValue) (\(lastErrorText(nil)))",
                sourceLocation: sourceLocation)
        #expect(!lastErrorText(nil).isEmpty, "\(name): empty sparkv_last_error(NULL)", sourceLocation: sourceLocation)
        #expect(out == nil, "\(name): *out not cleared", sourceLocation: sourceLocation)
        if let out, st == SPARKV_OK { sparkv_cache_free(out) }
        if checkValidate {
            let v = sparkv_policy_validate(&p, s.head_dim)
            #expect(v == expected, "\(name): policy_validate got \(v.rawValue)", sourceLocation: sourceLocation)
            #expect(!lastErrorText(nil).isEmpty, sourceLocation: sourceLocation)
        }
    }

    @Test("create rejects NULL pointers")
    func createRejectsNullPointers() {
        var shape = RefConfig(nQ: 2, nKV: 1, D: 64).shape()
        var policy = RefConfig(nQ: 2, nKV: 1, D: 64).policy
        var out: OpaquePointer? = OpaquePointer(bitPattern: 0x1234)
        #expect(sparkv_cache_create(nil, &policy, &out) == SPARKV_ERR_NULL_POINTER)
        #expect(out == nil)
        #expect(!lastErrorText(nil).isEmpty)
        out = OpaquePointer(bitPattern: 0x1234)
        #expect(sparkv_cache_create(&shape, nil, &out) == SPARKV_ERR_NULL_POINTER)
        #expect(out == nil)
        #expect(!lastErrorText(nil).isEmpty)
        #expect(sparkv_cache_create(&shape, &policy, nil) == SPARKV_ERR_NULL_POINTER)
        #expect(!lastErrorText(nil).isEmpty)
    }

    @Test("create rejects bad shapes")
    func createRejectsBadShapes() {
        let cfg = RefConfig(nQ: 4, nKV: 2, D: 64)
        let policy = cfg.policy
        let good = cfg.shape()
        var s = good
        s.n_layers = 0; Self.expectCreateFails("zero layers", SPARKV_ERR_INVALID_SHAPE, shape: s, policy: policy)
        s = good; s.n_q_heads = 0; Self.expectCreateFails("zero q heads", SPARKV_ERR_INVALID_SHAPE, shape: s, policy: policy)
        s = good; s.n_kv_heads = 0; Self.expectCreateFails("zero kv heads", SPARKV_ERR_INVALID_SHAPE, shape: s, policy: policy)
        s = good; s.capacity = 0; Self.expectCreateFails("zero capacity", SPARKV_ERR_INVALID_SHAPE, shape: s, policy: policy)
        for d in [UInt32(0), 7, 12, 264, 257] {
            s = good; s.head_dim = d
            Self.expectCreateFails("head_dim \(d)", SPARKV_ERR_HEAD_DIM, shape: s, policy: policy)
        }
        s = good; s.n_q_heads = 6; s.n_kv_heads = 4
        Self.expectCreateFails("6 q heads over 4 kv heads", SPARKV_ERR_GQA, shape: s, policy: policy)
        s = good; s.n_q_heads = 1; s.n_kv_heads = 2
        Self.expectCreateFails("1 q head over 2 kv heads", SPARKV_ERR_GQA, shape: s, policy: policy)
        s = good; s.struct_size = 0
        Self.expectCreateFails("shape struct_size 0", SPARKV_ERR_STRUCT_SIZE, shape: s, policy: policy)
        s = good; s.struct_size += 8
        Self.expectCreateFails("shape struct_size + 8", SPARKV_ERR_STRUCT_SIZE, shape: s, policy: policy)
        // the good shape is accepted
        var gs = good, gp = policy
        var out: OpaquePointer? = nil
        #expect(sparkv_cache_create(&gs, &gp, &out) == SPARKV_OK)
        #expect(out != nil)
        sparkv_cache_free(out)
    }

    @Test("create and policy_validate reject out-of-range policies")
    func createRejectsBadPolicies() {
        let cfg = RefConfig(nQ: 2, nKV: 1, D: 64)
        let shape = cfg.shape()
        let good = cfg.policy
        var cases: [(String, sparkv_policy)] = []
        func add(_ name: String, _ f: (inout sparkv_policy) -> Void) { var p = good; f(&p); cases.append((name, p)) }
        add("r = -0.1") { $0.key_prune_ratio = -0.1 }
        add("r = 1.0") { $0.key_prune_ratio = 1.0 }
        add("r = NaN") { $0.key_prune_ratio = .nan }
        add("r = +Inf") { $0.key_prune_ratio = .infinity }
        add("p = 0") { $0.selection = SPARKV_SELECT_CUMULATIVE; $0.cumulative_p = 0 }
        add("p = 1.5") { $0.selection = SPARKV_SELECT_CUMULATIVE; $0.cumulative_p = 1.5 }
        add("p = NaN") { $0.selection = SPARKV_SELECT_CUMULATIVE; $0.cumulative_p = .nan }
        add("min_keep > max_keep") { $0.selection = SPARKV_SELECT_CUMULATIVE; $0.cumulative_min_keep = 5; $0.cumulative_max_keep = 3 }
        add("min_keep > D") { $0.selection = SPARKV_SELECT_CUMULATIVE; $0.cumulative_min_keep = 65 }
        add("max_keep > D") { $0.selection = SPARKV_SELECT_CUMULATIVE; $0.cumulative_max_keep = 65 }
        add("sign bits with NONE") { $0.key_prune_ratio = 0.5; $0.recovery = SPARKV_RECOVER_NONE; $0.sign_bits = 1 }
        add("window 0") { $0.key_prune_ratio = 0.5; $0.window = 0 }
        add("threads -1") { $0.threads = -1 }
        add("attention_scale -1") { $0.attention_scale = -1 }
        add("attention_scale NaN") { $0.attention_scale = .nan }
        add("attention_scale Inf") { $0.attention_scale = .infinity }
        add("selection 2") { $0.selection = sparkv_selection(rawValue: 2) }
        add("recovery 4") { $0.recovery = sparkv_recovery(rawValue: 4) }
        add("key precision 5") { $0.key_precision = sparkv_precision(rawValue: 5) }
        add("value precision 5") { $0.value_precision = sparkv_precision(rawValue: 5) }
        for (name, p) in cases {
            Self.expectCreateFails(name, SPARKV_ERR_INVALID_POLICY, shape: shape, policy: p, checkValidate: true)
        }
        var bad = good
        bad.struct_size = 4
        Self.expectCreateFails("policy struct_size 4", SPARKV_ERR_STRUCT_SIZE, shape: shape, policy: bad, checkValidate: true)
        bad.struct_size = good.struct_size + 16
        Self.expectCreateFails("policy struct_size + 16", SPARKV_ERR_STRUCT_SIZE, shape: shape, policy: bad, checkValidate: true)
        var ok = good
        #expect(sparkv_policy_validate(&ok, 64) == SPARKV_OK)
        #expect(sparkv_policy_validate(&ok, 12) == SPARKV_ERR_HEAD_DIM)
    }

    // MARK: prefill

    @Test("prefill failures return their code and change nothing")
    func prefillFailuresLeaveCacheUnchanged() throws {
        let f = try Fixture()
        let p = f.prompt
        #expect(rawPrefill(nil, layer: 1, keys: p.keys, values: p.values, n: 50, q: p.qWindow, nWindow: 8) == SPARKV_ERR_NULL_POINTER)
        try f.expectFailure("NULL keys", SPARKV_ERR_NULL_POINTER) {
            rawPrefill($0, layer: 1, keys: nil, values: p.values, n: 50, q: p.qWindow, nWindow: 8)
        }
        try f.expectFailure("NULL values", SPARKV_ERR_NULL_POINTER) {
            rawPrefill($0, layer: 1, keys: p.keys, values: nil, n: 50, q: p.qWindow, nWindow: 8)
        }
        try f.expectFailure("NULL window with n_window 8", SPARKV_ERR_NULL_POINTER) {
            rawPrefill($0, layer: 1, keys: p.keys, values: p.values, n: 50, q: nil, nWindow: 8)
        }
        try f.expectFailure("n_tokens 0", SPARKV_ERR_INVALID_SHAPE) {
            rawPrefill($0, layer: 1, keys: p.keys, values: p.values, n: 0, q: p.qWindow, nWindow: 8)
        }
        for (name, i, x) in [("NaN key", 0, Float.nan), ("+Inf key", 50 * 64 + 17, .infinity), ("-Inf key", p.keys.count - 1, -.infinity)] {
            let bad = poisoned(p.keys, at: i, x)
            try f.expectFailure(name, SPARKV_ERR_NON_FINITE) {
                rawPrefill($0, layer: 1, keys: bad, values: p.values, n: 50, q: p.qWindow, nWindow: 8)
            }
        }
        for (name, i, x) in [("NaN value", 3, Float.nan), ("Inf value", p.values.count - 5, .infinity)] {
            let bad = poisoned(p.values, at: i, x)
            try f.expectFailure(name, SPARKV_ERR_NON_FINITE) {
                rawPrefill($0, layer: 1, keys: p.keys, values: bad, n: 50, q: p.qWindow, nWindow: 8)
            }
        }
        for (name, i, x) in [("NaN window query", 5, Float.nan), ("Inf window query (last head)", p.qWindow.count - 1, .infinity)] {
            let bad = poisoned(p.qWindow, at: i, x)
            try f.expectFailure(name, SPARKV_ERR_NON_FINITE) {
                rawPrefill($0, layer: 1, keys: p.keys, values: p.values, n: 50, q: bad, nWindow: 8)
            }
        }
        try f.expectFailure("layer out of range", SPARKV_ERR_LAYER) {
            rawPrefill($0, layer: 3, keys: p.keys, values: p.values, n: 50, q: p.qWindow, nWindow: 8)
        }
        let big = TestData.prompt(config: f.cfg, n: 103, nWindow: 8, kind: .random, seed: 5)
        try f.expectFailure("prompt over capacity", SPARKV_ERR_CAPACITY) {
            rawPrefill($0, layer: 1, keys: big.keys, values: big.values, n: 103, q: big.qWindow, nWindow: 8)
        }
        try f.expectFailure("prefill twice", SPARKV_ERR_STATE) {
            rawPrefill($0, layer: 2, keys: p.keys, values: p.values, n: 50, q: p.qWindow, nWindow: 8)
        }
        let longWindow = TestData.prompt(config: f.cfg, n: 10, nWindow: 11, kind: .random, seed: 6)
        try f.expectFailure("window longer than prompt", SPARKV_ERR_WINDOW) {
            rawPrefill($0, layer: 1, keys: longWindow.keys, values: longWindow.values, n: 10, q: longWindow.qWindow, nWindow: 11)
        }
        try f.expectFailure("n_window 0 with a window pointer", SPARKV_ERR_WINDOW) {
            rawPrefill($0, layer: 1, keys: p.keys, values: p.values, n: 50, q: p.qWindow, nWindow: 0)
        }
        try f.expectStillUsable()
    }

    // MARK: append / attend

    @Test("append failures return their code and change nothing")
    func appendFailuresLeaveCacheUnchanged() throws {
        let f = try Fixture()
        let t = f.token
        #expect(rawAppend(nil, layer: 2, keys: t.keys, values: t.values) == SPARKV_ERR_NULL_POINTER)
        try f.expectFailure("NULL keys", SPARKV_ERR_NULL_POINTER) { rawAppend($0, layer: 2, keys: nil, values: t.values) }
        try f.expectFailure("NULL values", SPARKV_ERR_NULL_POINTER) { rawAppend($0, layer: 2, keys: t.keys, values: nil) }
        let nanKey = poisoned(t.keys, at: 64 + 3, .nan)
        try f.expectFailure("NaN appended key", SPARKV_ERR_NON_FINITE) { rawAppend($0, layer: 2, keys: nanKey, values: t.values) }
        let infValue = poisoned(t.values, at: 127, -.infinity)
        try f.expectFailure("Inf appended value", SPARKV_ERR_NON_FINITE) { rawAppend($0, layer: 2, keys: t.keys, values: infValue) }
        try f.expectFailure("layer out of range", SPARKV_ERR_LAYER) { rawAppend($0, layer: 3, keys: t.keys, values: t.values) }
        try f.expectFailure("append to a full layer", SPARKV_ERR_CAPACITY) { rawAppend($0, layer: 0, keys: t.keys, values: t.values) }
        try f.expectStillUsable()
    }

    @Test("attend failures return their code and change nothing")
    func attendFailuresLeaveCacheUnchanged() throws {
        let f = try Fixture()
        let q = f.query
        #expect(rawAttend(nil, layer: 0, q: q, outCount: 256) == SPARKV_ERR_NULL_POINTER)
        try f.expectFailure("NULL query", SPARKV_ERR_NULL_POINTER) { rawAttend($0, layer: 0, q: nil, outCount: 256) }
        try f.expectFailure("NULL output", SPARKV_ERR_NULL_POINTER) { rawAttend($0, layer: 0, q: q, outCount: nil) }
        let nanQ = poisoned(q, at: 200, .nan)
        try f.expectFailure("NaN decode query", SPARKV_ERR_NON_FINITE) { rawAttend($0, layer: 0, q: nanQ, outCount: 256) }
        let infQ = poisoned(q, at: 0, .infinity)
        try f.expectFailure("Inf decode query", SPARKV_ERR_NON_FINITE) { rawAttend($0, layer: 2, q: infQ, outCount: 256) }
        try f.expectFailure("layer out of range", SPARKV_ERR_LAYER) { rawAttend($0, layer: 3, q: q, outCount: 256) }
        try f.expectFailure("empty layer", SPARKV_ERR_EMPTY) { rawAttend($0, layer: 1, q: q, outCount: 256) }
        try f.expectStillUsable()
    }

    // MARK: memory report / inspection / accessors

    @Test("memory report and inspection failures return their code and change nothing")
    func inspectionFailuresLeaveCacheUnchanged() throws {
        let f = try Fixture()
        var mem = sparkv_memory()
        mem.struct_size = UInt64(MemoryLayout<sparkv_memory>.size)
        #expect(sparkv_memory_report(nil, 0, &mem) == SPARKV_ERR_NULL_POINTER)
        try f.expectFailure("memory_report NULL out", SPARKV_ERR_NULL_POINTER) { sparkv_memory_report($0, 0, nil) }
        try f.expectFailure("memory_report layer 3", SPARKV_ERR_LAYER) { sparkv_memory_report($0, 3, &mem) }

        var mask = [UInt8](repeating: 0, count: 8)
        var key = [Float](repeating: 0, count: 64)
        var c: Float = 0
        #expect(sparkv_inspect_key(nil, 0, 0, 0, &mask, &key) == SPARKV_ERR_NULL_POINTER)
        #expect(sparkv_inspect_value(nil, 0, 0, 0, &key) == SPARKV_ERR_NULL_POINTER)
        #expect(sparkv_inspect_qnorm(nil, 0, 0, &key, &c) == SPARKV_ERR_NULL_POINTER)
        try f.expectFailure("inspect_key layer 3", SPARKV_ERR_LAYER) { sparkv_inspect_key($0, 3, 0, 0, &mask, &key) }
        try f.expectFailure("inspect_key head 2", SPARKV_ERR_INDEX) { sparkv_inspect_key($0, 0, 2, 0, &mask, &key) }
        try f.expectFailure("inspect_key token 102", SPARKV_ERR_INDEX) { sparkv_inspect_key($0, 0, 0, 102, &mask, &key) }
        try f.expectFailure("inspect_key token 50 of a 50-token layer", SPARKV_ERR_INDEX) { sparkv_inspect_key($0, 2, 0, 50, &mask, &key) }
        try f.expectFailure("inspect_key on an empty layer", SPARKV_ERR_INDEX) { sparkv_inspect_key($0, 1, 0, 0, &mask, &key) }
        try f.expectFailure("inspect_value NULL out", SPARKV_ERR_NULL_POINTER) { sparkv_inspect_value($0, 0, 0, 0, nil) }
        try f.expectFailure("inspect_value layer 3", SPARKV_ERR_LAYER) { sparkv_inspect_value($0, 3, 0, 0, &key) }
        try f.expectFailure("inspect_value head 2", SPARKV_ERR_INDEX) { sparkv_inspect_value($0, 0, 2, 0, &key) }
        try f.expectFailure("inspect_value token 102", SPARKV_ERR_INDEX) { sparkv_inspect_value($0, 0, 0, 102, &key) }
        try f.expectFailure("inspect_qnorm layer 3", SPARKV_ERR_LAYER) { sparkv_inspect_qnorm($0, 3, 0, &key, &c) }
        try f.expectFailure("inspect_qnorm head 2", SPARKV_ERR_INDEX) { sparkv_inspect_qnorm($0, 0, 2, &key, &c) }

        // NULL outputs are allowed where documented
        #expect(sparkv_inspect_key(f.h, 0, 0, 0, nil, nil) == SPARKV_OK)
        #expect(sparkv_inspect_qnorm(f.h, 0, 0, nil, nil) == SPARKV_OK)

        var shape = sparkv_default_shape(), policy = sparkv_default_policy()
        #expect(sparkv_cache_shape(nil, &shape) == SPARKV_ERR_NULL_POINTER)
        #expect(sparkv_cache_policy(nil, &policy) == SPARKV_ERR_NULL_POINTER)
        try f.expectFailure("cache_shape NULL out", SPARKV_ERR_NULL_POINTER) { sparkv_cache_shape($0, nil) }
        try f.expectFailure("cache_policy NULL out", SPARKV_ERR_NULL_POINTER) { sparkv_cache_policy($0, nil) }
        #expect(sparkv_layer_tokens(nil, 0) == 0)
        #expect(sparkv_layer_tokens(f.h, 3) == 0)

        for kernel in [SPARKV_KERNEL_AVX2, SPARKV_KERNEL_AVX512] where sparkv_kernel_supported(kernel) == 0 {
            try f.expectFailure("unsupported kernel \(kernel.rawValue)", SPARKV_ERR_UNSUPPORTED) { sparkv_cache_set_kernel($0, kernel) }
        }
        try f.expectStillUsable()
    }

    @Test("shape and policy round-trip through the cache")
    func cacheReportsItsShapeAndPolicy() throws {
        let cfg = RefConfig(nQ: 6, nKV: 2, D: 40, r: 0.7, cumulative: true, p: 0.85, minKeep: 3, maxKeep: 30,
                            recovery: .exponential, signs: false, keyPrecision: .bf16, valuePrecision: .f32,
                            window: 12, seed: 99, attentionScale: 0.2, threads: 2)
        let cache = try CCache(cfg, layers: 2, capacity: 333)
        var shape = sparkv_default_shape(), policy = sparkv_default_policy()
        #expect(sparkv_cache_shape(cache.handle, &shape) == SPARKV_OK)
        #expect(sparkv_cache_policy(cache.handle, &policy) == SPARKV_OK)
        #expect(shape.n_layers == 2 && shape.n_q_heads == 6 && shape.n_kv_heads == 2 && shape.head_dim == 40 && shape.capacity == 333)
        #expect(policy.key_prune_ratio == 0.7 && policy.selection == SPARKV_SELECT_CUMULATIVE && policy.cumulative_p == 0.85)
        #expect(policy.cumulative_min_keep == 3 && policy.cumulative_max_keep == 30)
        #expect(policy.recovery == SPARKV_RECOVER_EXPONENTIAL && policy.sign_bits == 0)
        #expect(policy.key_precision == SPARKV_BF16 && policy.value_precision == SPARKV_F32)
        #expect(policy.window == 12 && policy.seed == 99 && policy.threads == 2 && policy.attention_scale == 0.2)
        #expect(lastErrorText(cache.handle).isEmpty, "no failure yet")
    }
}
