import CSparKV

/// Memory planning: what caches of a shape and policy will hold, answered from the library's exact
/// byte formulas before any cache exists (`sparkv_plan_*`).
///
/// Every answer counts ``MemoryReport/reservedBytes`` (pages as allocated, slack included), the
/// figure a server must budget; handles and per-call scratch are not counted. Predictions equal
/// the report of a real cache for every policy except cumulative selection, where each token is
/// counted with the policy's maximum kept channels (an upper bound).
///
/// ```swift
/// let shape = ModelShape.llama3_8B(capacity: 1 << 20)
/// let longest = try MemoryPlan.maxPromptTokens(shape: shape, policy: .spark(ratio: 0.8),
///                                              memoryBytes: 16 << 30)
/// let batch = try MemoryPlan.maxBatch(shape: shape, policy: .dense, memoryBytes: 16 << 30,
///                                     promptTokens: 32_768)
/// ```
public enum MemoryPlan {
    /// The memory report a cache would give after every layer is prefilled with `promptTokens`
    /// tokens (0: no prefill) and then `appendedTokens` tokens are appended to every layer.
    ///
    /// - Throws: the shape's and policy's errors (as ``KVCache/init(shape:policy:)``),
    ///   ``SparKVError/capacity(_:)`` beyond the shape's capacity, ``SparKVError/invalidPolicy(_:)``
    ///   when an eviction budget exceeds the prompt minus the window.
    public static func memory(shape: ModelShape, policy: CompressionPolicy, promptTokens: Int,
                              appendedTokens: Int = 0) throws -> MemoryReport {
        var (s, p) = try cValues(shape, policy)
        let prompt = try count("promptTokens", promptTokens), appended = try count("appendedTokens", appendedTokens)
        var out = sparkv_memory()
        out.struct_size = UInt64(MemoryLayout<sparkv_memory>.size)
        try check(sparkv_plan_memory(&s, &p, prompt, appended, &out))
        return MemoryReport(out)
    }

    /// The longest prompt per sequence such that `batch` sequences of it (plus `appendedTokens`
    /// each) fit in `memoryBytes`; at most the shape's capacity minus `appendedTokens`, 0 when
    /// not even the shortest prompt the policy accepts fits.
    public static func maxPromptTokens(shape: ModelShape, policy: CompressionPolicy, memoryBytes: Int,
                                       batch: Int = 1, appendedTokens: Int = 0) throws -> Int {
        var (s, p) = try cValues(shape, policy)
        guard batch >= 1 else { throw SparKVError.invalidShape("plan: batch is \(batch); it must be at least 1") }
        var out: UInt64 = 0
        try check(sparkv_plan_max_prompt(&s, &p, try count("memoryBytes", memoryBytes), UInt64(batch),
                                         try count("appendedTokens", appendedTokens), &out))
        return Int(clamping: out)
    }

    /// The most sequences of `promptTokens` + `appendedTokens` tokens whose caches fit in
    /// `memoryBytes` (`Int.max` when a sequence needs no memory).
    public static func maxBatch(shape: ModelShape, policy: CompressionPolicy, memoryBytes: Int,
                                promptTokens: Int, appendedTokens: Int = 0) throws -> Int {
        var (s, p) = try cValues(shape, policy)
        var out: UInt64 = 0
        try check(sparkv_plan_max_batch(&s, &p, try count("memoryBytes", memoryBytes),
                                        try count("promptTokens", promptTokens),
                                        try count("appendedTokens", appendedTokens), &out))
        return Int(clamping: out)
    }

    /// llama.cpp's KV cache types, for comparison: K and V in ggml blocks of 32 values.
    public enum LlamaCppCacheType: String, Sendable, CaseIterable {
        /// 2 bytes per value.
        case f16
        /// 34-byte blocks of 32 values (fp16 scale + 32 int8): 1.0625 bytes per value.
        case q8_0
        /// 18-byte blocks of 32 values (fp16 scale + 32 nibbles): 0.5625 bytes per value.
        case q4_0

        /// Bytes of one block and values per block.
        var block: (bytes: Int, values: Int) {
            switch self {
            case .f16: return (2, 1)
            case .q8_0: return (34, 32)
            case .q4_0: return (18, 32)
            }
        }
    }

    /// Bytes llama.cpp's cache of `type` holds for `tokens` tokens of one sequence: every layer's
    /// K and V rows, `kvHeads * headDim` values per token, in whole ggml blocks. (llama.cpp
    /// allocates the whole context up front; this counts exactly `tokens` cells.)
    ///
    /// ```swift
    /// MemoryPlan.llamaCppBytes(shape: .llama3_8B(capacity: 8192), type: .q8_0, tokens: 8192)
    /// ```
    public static func llamaCppBytes(shape: ModelShape, type: LlamaCppCacheType, tokens: Int) -> Int {
        let row = shape.kvHeads * shape.headDim
        let blocks = (row + type.block.values - 1) / type.block.values
        var total = blocks
        for factor in [type.block.bytes, 2, shape.layers, tokens] {
            let (product, overflow) = total.multipliedReportingOverflow(by: factor)
            if overflow { return Int.max }
            total = product
        }
        return total
    }

    /// The longest context llama.cpp's `type` cache holds per sequence in `memoryBytes` with
    /// `batch` sequences.
    public static func llamaCppMaxTokens(shape: ModelShape, type: LlamaCppCacheType, memoryBytes: Int,
                                         batch: Int = 1) -> Int {
        let perToken = llamaCppBytes(shape: shape, type: type, tokens: 1)
        guard perToken > 0, batch >= 1 else { return 0 }
        return memoryBytes / batch / perToken
    }

    private static func cValues(_ shape: ModelShape, _ policy: CompressionPolicy) throws -> (sparkv_shape, sparkv_policy) {
        (try shape.cShape(), try policy.cPolicy())
    }

    private static func count(_ name: String, _ value: Int) throws -> UInt64 {
        guard value >= 0 else { throw SparKVError.invalidShape("plan: \(name) is \(value); it must not be negative") }
        return UInt64(value)
    }

    private static func check(_ status: sparkv_status) throws {
        try SparKVError.check(status, detail: String(cString: sparkv_last_error(nil)))
    }
}
