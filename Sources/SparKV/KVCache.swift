import CSparKV

/// A SparK-compressed KV cache: the owner of one C cache handle.
///
/// Lifecycle: create it for a ``ModelShape`` and a ``CompressionPolicy``, ``prefill(layer:keys:values:windowQueries:tokenCount:windowCount:)``
/// each layer once with the prompt's post-RoPE keys, values and last window queries, then per
/// decode step ``append(layer:keys:values:)`` the new token and ``attend(layer:query:)``.
/// ``memoryReport()`` tells the exact bytes held. The C memory is freed when the object goes away.
///
/// Layouts are row-major float32: keys and values `[kvHeads][tokens][headDim]`, window queries
/// `[queryHeads][windowCount][headDim]`, a decode query or output `[queryHeads][headDim]`, an
/// appended token `[kvHeads][headDim]`. Buffer sizes are checked against the shape before the
/// library is called; any failure throws ``SparKVError`` and leaves the cache unchanged.
///
/// **Threading.** A cache may be used from any thread, but by one at a time: calls on one cache
/// must never overlap (prefill and attend parallelize internally with OpenMP, using
/// ``CompressionPolicy/threads``). `KVCache` is therefore deliberately *not* `Sendable`: the
/// compiler then keeps each cache inside one isolation domain, while still letting you hand a
/// cache over to another task or thread as a whole (a `sending` transfer). To use one cache from
/// several tasks, own it from an actor. Marking it `@unchecked Sendable` would let two tasks call
/// it at once, which the C library does not allow.
///
/// ```swift
/// let shape = ModelShape.llama3_8B(capacity: 4096 + 256)
/// let cache = try KVCache(shape: shape, policy: .spark(ratio: 0.8))
/// let data = SyntheticKV(shape: shape, seed: 1)
/// try cache.prefill(layer: 0, keys: data.keys(layer: 0, tokens: 0..<4096),
///                   values: data.values(layer: 0, tokens: 0..<4096),
///                   windowQueries: data.queries(layer: 0, positions: 4064..<4096),
///                   tokenCount: 4096, windowCount: 32)
/// let out = try cache.attend(layer: 0, query: data.queries(layer: 0, positions: 4096..<4097))
/// print(try cache.memoryReport().ratioToDense)
/// ```
public final class KVCache {
    /// The shape the cache was created with.
    ///
    /// ```swift
    /// let perToken = cache.shape.kvHeads * cache.shape.headDim
    /// ```
    public let shape: ModelShape
    /// The policy the cache was created with.
    ///
    /// ```swift
    /// if cache.policy.prunes(headDim: cache.shape.headDim) { print("compressed keys") }
    /// ```
    public let policy: CompressionPolicy

    let handle: OpaquePointer

    /// Creates an empty cache. Nothing is allocated for tokens until they arrive.
    ///
    /// - Throws: ``SparKVError`` if the shape or the policy is invalid (the same checks as
    ///   ``ModelShape/validate()`` and ``CompressionPolicy/validate(headDim:)``).
    ///
    /// ```swift
    /// let cache = try KVCache(shape: .smolLM2_135M(capacity: 2048), policy: .spark(ratio: 0.5))
    /// ```
    public init(shape: ModelShape, policy: CompressionPolicy = .dense) throws {
        var cShape = try shape.cShape()
        var cPolicy = try policy.cPolicy()
        var created: OpaquePointer?
        let status = sparkv_cache_create(&cShape, &cPolicy, &created)
        try SparKVError.check(status, detail: String(cString: sparkv_last_error(nil)))
        guard let created else { throw SparKVError.outOfMemory("cache_create returned no cache") }
        self.shape = shape
        self.policy = policy
        self.handle = created
    }

    /// Adopts a handle the C library created (the loaders of KVCache+Persistence.swift).
    init(adopting handle: OpaquePointer, shape: ModelShape, policy: CompressionPolicy) {
        self.shape = shape
        self.policy = policy
        self.handle = handle
    }

    /// Threads ``prefill(layer:keys:values:windowQueries:tokenCount:windowCount:)`` and attend use:
    /// the policy's ``CompressionPolicy/threads``, or OpenMP's default when that is nil.
    ///
    /// ```swift
    /// print("attending on \(cache.threadCount) threads")
    /// ```
    public var threadCount: Int { Int(sparkv_cache_threads(handle)) }

    deinit {
        sparkv_cache_free(handle)
    }

    /// The version of the C library, "MAJOR.MINOR.PATCH".
    ///
    /// ```swift
    /// print("SparKV \(KVCache.libraryVersion)")
    /// ```
    public static var libraryVersion: String { String(cString: sparkv_version_string()) }

    // MARK: Prefill

    /// Compresses and stores the prompt of one layer. Allowed once per layer, on an empty layer.
    ///
    /// - Parameters:
    ///   - layer: layer index in `0..<shape.layers`.
    ///   - keys: post-RoPE keys `[kvHeads][tokenCount][headDim]`, in any ``KVElement`` type
    ///     (`Float`, `Float16`, ``BFloat16``: read in place, widened exactly; see ``KVElement``).
    ///   - values: values `[kvHeads][tokenCount][headDim]`, same element type.
    ///   - windowQueries: the last `windowCount` post-RoPE prompt queries of this layer,
    ///     `[queryHeads][windowCount][headDim]`, oldest first; the last `min(policy.window,
    ///     windowCount)` rows are used. Required when the policy prunes key channels or evicts
    ///     with SnapKV/PyramidKV; nil (with `windowCount` 0) is allowed otherwise.
    ///   - tokenCount: prompt tokens, at least 1.
    ///   - windowCount: rows of `windowQueries`, in `1...tokenCount` when given.
    /// - Throws: ``SparKVError/invalidShape(_:)`` if a buffer's element count does not match, and
    ///   ``SparKVError/window(_:)`` if the policy needs window queries and none are given, before
    ///   anything is passed to C; otherwise the library's error (second prefill, window longer
    ///   than the prompt, an eviction budget above the prompt minus the window, NaN input,
    ///   capacity, ...).
    ///
    /// ```swift
    /// try keys.withUnsafeBufferPointer { k in
    ///     try values.withUnsafeBufferPointer { v in
    ///         try window.withUnsafeBufferPointer { q in
    ///             try cache.prefill(layer: 0, keys: k, values: v, windowQueries: q, tokenCount: 4096, windowCount: 32)
    ///         }
    ///     }
    /// }
    /// ```
    public func prefill<Element: KVElement>(
        layer: Int, keys: UnsafeBufferPointer<Element>, values: UnsafeBufferPointer<Element>,
        windowQueries: UnsafeBufferPointer<Element>?, tokenCount: Int, windowCount: Int = 0
    ) throws {
        let cLayer = try layerIndex(layer, in: "prefill")
        guard tokenCount >= 1 else {
            throw SparKVError.invalidShape("prefill: tokenCount is \(tokenCount); it must be at least 1")
        }
        guard windowCount >= 0 else {
            throw SparKVError.invalidShape("prefill: windowCount is \(windowCount); it must not be negative")
        }
        let kvLayout = "[kvHeads \(shape.kvHeads)][tokenCount \(tokenCount)][headDim \(shape.headDim)]"
        let kvCount = try elementCount("prefill", shape.kvHeads, tokenCount, shape.headDim)
        try expect(keys.count, kvCount, "prefill: keys", kvLayout)
        try expect(values.count, kvCount, "prefill: values", kvLayout)
        var window: UnsafePointer<Element>? = nil
        if windowCount > 0 {
            let qLayout = "[queryHeads \(shape.queryHeads)][windowCount \(windowCount)][headDim \(shape.headDim)]"
            let qCount = try elementCount("prefill", shape.queryHeads, windowCount, shape.headDim)
            try expect(windowQueries?.count ?? 0, qCount, "prefill: windowQueries", qLayout)
            window = windowQueries?.baseAddress
        } else if let windowQueries, !windowQueries.isEmpty {
            throw SparKVError.invalidShape(
                "prefill: windowQueries holds \(windowQueries.count) floats but windowCount is 0; pass the number of window rows")
        } else if policy.needsWindow(headDim: shape.headDim) {
            // C reports this as a NULL q_window; to a Swift caller it is an empty window.
            throw SparKVError.window(
                "prefill: the policy \(policy) prunes key channels or scores tokens for eviction, so it needs "
                + "windowQueries with windowCount >= 1")
        }
        try check(sparkv_prefill_typed(handle, cLayer, Element.kvElementType.cValue, keys.baseAddress,
                                       values.baseAddress, UInt64(tokenCount), window, UInt64(windowCount)))
    }

    /// Array convenience for ``prefill(layer:keys:values:windowQueries:tokenCount:windowCount:)``.
    ///
    /// ```swift
    /// try cache.prefill(layer: 0, keys: keys, values: values, windowQueries: window,
    ///                   tokenCount: 4096, windowCount: 32)
    /// ```
    public func prefill<Element: KVElement>(
        layer: Int, keys: [Element], values: [Element], windowQueries: [Element]? = nil,
        tokenCount: Int, windowCount: Int = 0
    ) throws {
        try keys.withUnsafeBufferPointer { k in
            try values.withUnsafeBufferPointer { v in
                if let windowQueries {
                    try windowQueries.withUnsafeBufferPointer { q in
                        try prefill(layer: layer, keys: k, values: v, windowQueries: q,
                                    tokenCount: tokenCount, windowCount: windowCount)
                    }
                } else {
                    try prefill(layer: layer, keys: k, values: v, windowQueries: UnsafeBufferPointer<Element>?.none,
                                tokenCount: tokenCount, windowCount: windowCount)
                }
            }
        }
    }

    // MARK: Append

    /// Appends one decode token to a layer, stored dense in the policy's precisions.
    ///
    /// - Parameters:
    ///   - keys: the token's post-RoPE key for every KV head, `[kvHeads][headDim]`, in any
    ///     ``KVElement`` type.
    ///   - values: its values, `[kvHeads][headDim]`, same element type.
    ///   - query: the step's post-RoPE query `[queryHeads][headDim]`, or nil. With
    ///     ``CompressionPolicy/decodeCompression``, aged SparK pages take their window-query norms
    ///     from the last `window` queries passed here (the prompt's until one is).
    /// - Throws: ``SparKVError/invalidShape(_:)`` for a buffer of the wrong size,
    ///   ``SparKVError/capacity(_:)`` when the layer is full, ``SparKVError/nonFinite(_:)``.
    ///
    /// ```swift
    /// try k.withUnsafeBufferPointer { k in try v.withUnsafeBufferPointer { v in
    ///     try cache.append(layer: 0, keys: k, values: v)
    /// } }
    /// ```
    public func append<Element: KVElement>(
        layer: Int, keys: UnsafeBufferPointer<Element>, values: UnsafeBufferPointer<Element>,
        query: UnsafeBufferPointer<Float>? = nil
    ) throws {
        let cLayer = try layerIndex(layer, in: "append")
        let layout = "[kvHeads \(shape.kvHeads)][headDim \(shape.headDim)]"
        let count = try elementCount("append", shape.kvHeads, 1, shape.headDim)
        try expect(keys.count, count, "append: keys", layout)
        try expect(values.count, count, "append: values", layout)
        if let query {
            let qCount = try elementCount("append", shape.queryHeads, 1, shape.headDim)
            try expect(query.count, qCount, "append: query", "[queryHeads \(shape.queryHeads)][headDim \(shape.headDim)]")
        }
        try check(sparkv_append_step(handle, cLayer, Element.kvElementType.cValue, keys.baseAddress,
                                     values.baseAddress, query?.baseAddress))
    }

    /// Array convenience for the buffer-pointer ``append(layer:keys:values:)``.
    ///
    /// ```swift
    /// try cache.append(layer: 0, keys: data.keys(layer: 0, tokens: 4096..<4097),
    ///                  values: data.values(layer: 0, tokens: 4096..<4097))
    /// ```
    public func append<Element: KVElement>(layer: Int, keys: [Element], values: [Element], query: [Float]? = nil) throws {
        try keys.withUnsafeBufferPointer { k in
            try values.withUnsafeBufferPointer { v in
                if let query {
                    try query.withUnsafeBufferPointer { q in try append(layer: layer, keys: k, values: v, query: q) }
                } else {
                    try append(layer: layer, keys: k, values: v, query: nil)
                }
            }
        }
    }

    // MARK: Attend

    /// Decode attention of one query token over every token the layer holds:
    /// `out[h] = softmax(scale * q[h] . K^T) V` per query head, with pruned key entries recovered
    /// per the policy. Deterministic: the same call always gives the same result, whatever the
    /// thread count.
    ///
    /// - Parameters:
    ///   - query: post-RoPE query `[queryHeads][headDim]`.
    ///   - out: receives `[queryHeads][headDim]`; must not overlap `query`.
    /// - Throws: ``SparKVError/invalidShape(_:)`` for wrong sizes or overlapping buffers,
    ///   ``SparKVError/empty(_:)`` for a layer without tokens.
    ///
    /// ```swift
    /// var out = [Float](repeating: 0, count: shape.queryHeads * shape.headDim)
    /// try q.withUnsafeBufferPointer { q in try out.withUnsafeMutableBufferPointer { o in
    ///     try cache.attend(layer: 0, query: q, into: o)
    /// } }
    /// ```
    public func attend(layer: Int, query: UnsafeBufferPointer<Float>, into out: UnsafeMutableBufferPointer<Float>) throws {
        let cLayer = try layerIndex(layer, in: "attend")
        let layout = "[queryHeads \(shape.queryHeads)][headDim \(shape.headDim)]"
        let count = try elementCount("attend", shape.queryHeads, 1, shape.headDim)
        try expect(query.count, count, "attend: query", layout)
        try expect(out.count, count, "attend: out", layout)
        if let q = query.baseAddress, let o = out.baseAddress,
           UnsafeRawPointer(o) < UnsafeRawPointer(q + count), UnsafeRawPointer(q) < UnsafeRawPointer(o + count) {
            throw SparKVError.invalidShape("attend: out overlaps query; use separate buffers")
        }
        try check(sparkv_attend(handle, cLayer, query.baseAddress, out.baseAddress))
    }

    /// Decode attention into an existing array (resized to `queryHeads * headDim` if needed), for
    /// loops that should not allocate.
    ///
    /// ```swift
    /// var out = [Float]()
    /// for layer in 0..<shape.layers { try cache.attend(layer: layer, query: q, into: &out) }
    /// ```
    public func attend(layer: Int, query: [Float], into out: inout [Float]) throws {
        let count = shape.queryHeads &* shape.headDim
        if out.count != count, count > 0 { out = [Float](repeating: 0, count: count) }
        try query.withUnsafeBufferPointer { q in
            try out.withUnsafeMutableBufferPointer { o in try attend(layer: layer, query: q, into: o) }
        }
    }

    /// Decode attention of a batch: one query per sequence, each sequence its own cache, all for
    /// one layer, in one parallel region (`sparkv_attend_batch`). Each sequence's output is
    /// bit-identical to ``attend(layer:query:)`` on its cache.
    ///
    /// - Parameters:
    ///   - caches: at least one cache; equal `queryHeads`, `kvHeads` and `headDim` (policies and
    ///     lengths may differ; a cache may appear more than once).
    ///   - layer: the layer every cache attends.
    ///   - queries: `[caches.count][queryHeads][headDim]`.
    /// - Returns: `[caches.count][queryHeads][headDim]`.
    /// - Throws: ``SparKVError/invalidShape(_:)`` for an empty batch, mismatched shapes or a wrong
    ///   query count; otherwise the first failing sequence's error, its message prefixed with
    ///   "attend_batch: sequence i:".
    ///
    /// ```swift
    /// let outs = try KVCache.attend(batch: [a, b, c], layer: 0, queries: qa + qb + qc)
    /// ```
    public static func attend(batch caches: [KVCache], layer: Int, queries: [Float]) throws -> [Float] {
        guard let first = caches.first else { throw SparKVError.invalidShape("attend_batch: the batch is empty") }
        guard let n = UInt32(exactly: caches.count) else {
            throw SparKVError.invalidShape("attend_batch: \(caches.count) caches exceed 2^32 - 1")
        }
        let cLayer = try first.layerIndex(layer, in: "attend_batch")
        let per = first.shape.queryHeads * first.shape.headDim
        let (count, overflow) = per.multipliedReportingOverflow(by: caches.count)
        guard !overflow, queries.count == count else {
            throw SparKVError.invalidShape("attend_batch: queries hold \(queries.count) elements; "
                                           + "[\(caches.count)][queryHeads \(first.shape.queryHeads)][headDim \(first.shape.headDim)] needs \(count)")
        }
        var out = [Float](repeating: 0, count: count)
        let handles: [OpaquePointer?] = caches.map { $0.handle }
        let status = handles.withUnsafeBufferPointer { h in
            queries.withUnsafeBufferPointer { q in
                out.withUnsafeMutableBufferPointer { o in
                    sparkv_attend_batch(h.baseAddress, n, cLayer, q.baseAddress, o.baseAddress)
                }
            }
        }
        try withExtendedLifetime(caches) {
            try SparKVError.check(status, detail: String(cString: sparkv_last_error(nil)))
        }
        return out
    }

    /// Decode attention returning a new `[queryHeads][headDim]` array.
    ///
    /// ```swift
    /// let out = try cache.attend(layer: 0, query: q)
    /// ```
    public func attend(layer: Int, query: [Float]) throws -> [Float] {
        var out = [Float]()
        try attend(layer: layer, query: query, into: &out)
        return out
    }

    // MARK: State and memory

    /// Tokens the layer holds (prompt + appended).
    ///
    /// - Throws: ``SparKVError/layer(_:)`` for an index outside `0..<shape.layers`.
    ///
    /// ```swift
    /// let next = try cache.tokenCount(layer: 0)   // position of the next token
    /// ```
    public func tokenCount(layer: Int) throws -> Int {
        Int(clamping: sparkv_layer_tokens(handle, try layerIndex(layer, in: "tokenCount")))
    }

    /// Exact bytes held by one layer.
    ///
    /// ```swift
    /// print(try cache.memoryReport(layer: 0).keyMetaBytes)
    /// ```
    public func memoryReport(layer: Int) throws -> MemoryReport {
        try report(layer: try layerIndex(layer, in: "memoryReport"))
    }

    /// Exact bytes held by the whole cache (every layer).
    ///
    /// ```swift
    /// let report = try cache.memoryReport()
    /// print(report.totalBytes, report.denseBytes)
    /// ```
    public func memoryReport() throws -> MemoryReport {
        try report(layer: SPARKV_ALL_LAYERS)
    }

    /// The attention kernel family in use (never ``Kernel/auto``).
    ///
    /// ```swift
    /// print("kernel: \(cache.kernel.name)")
    /// ```
    public var kernel: Kernel { Kernel(cValue: sparkv_cache_kernel(handle)) }

    /// Chooses the attention kernel family; ``Kernel/auto`` picks the best the CPU supports.
    ///
    /// - Throws: ``SparKVError/unsupported(_:)`` if the CPU lacks it.
    ///
    /// ```swift
    /// try cache.setKernel(.portable)   // the reference kernels
    /// ```
    public func setKernel(_ kernel: Kernel) throws {
        try check(sparkv_cache_set_kernel(handle, kernel.cValue))
    }

    // MARK: Helpers

    private func report(layer: UInt32) throws -> MemoryReport {
        var m = sparkv_memory()
        m.struct_size = UInt64(MemoryLayout<sparkv_memory>.size)
        try check(sparkv_memory_report(handle, layer, &m))
        return MemoryReport(m)
    }

    /// Throws the error for `status` with this cache's detail message.
    func check(_ status: sparkv_status) throws {
        try SparKVError.check(status, detail: String(cString: sparkv_last_error(handle)))
    }

    func layerIndex(_ layer: Int, in operation: String) throws -> UInt32 {
        guard layer >= 0, layer < shape.layers, let l = UInt32(exactly: layer) else {
            throw SparKVError.layer("\(operation): layer \(layer) is out of range (layers = \(shape.layers))")
        }
        return l
    }

    func kvHeadIndex(_ head: Int, in operation: String) throws -> UInt32 {
        guard head >= 0, head < shape.kvHeads, let h = UInt32(exactly: head) else {
            throw SparKVError.index("\(operation): KV head \(head) is out of range (kvHeads = \(shape.kvHeads))")
        }
        return h
    }

    private func elementCount(_ operation: String, _ a: Int, _ b: Int, _ c: Int) throws -> Int {
        let (ab, o1) = a.multipliedReportingOverflow(by: b)
        let (abc, o2) = ab.multipliedReportingOverflow(by: c)
        guard !o1, !o2 else { throw SparKVError.invalidShape("\(operation): \(a) x \(b) x \(c) elements overflow") }
        return abc
    }

    private func expect(_ actual: Int, _ expected: Int, _ what: String, _ layout: String) throws {
        guard actual == expected else {
            throw SparKVError.invalidShape("\(what) hold \(actual) elements; \(layout) needs \(expected)")
        }
    }
}
