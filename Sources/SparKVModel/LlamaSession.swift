import CSparKVModel
import SparKV

/// Decoding with a model whose KV cache is a SparKV ``KVCache`` under some compression policy.
///
/// ``load(_:)`` hands a dense prefill's keys, values and window queries to the cache (which
/// compresses them per its policy); ``step(token:)`` then runs one new token through every layer:
/// its key and value are appended to the cache (dense) and its query attends the cache's compact
/// form directly.
///
/// ```swift
/// let session = try LlamaSession(model: model, policy: try CompressionPolicy(parsing: "snapkv:512+spark:0.8"),
///                                capacity: state.tokens.count + 256)
/// var logits = Array(try session.load(state))
/// for _ in 0..<16 { logits = try session.step(token: LlamaSession.greedy(logits)) }
/// ```
public final class LlamaSession {
    /// The model.
    public let model: LlamaModel
    /// The compressed KV cache of the layers in ``LlamaConfig/cachedLayers`` (all layers but
    /// sliding-window ones), in that order.
    public let cache: KVCache
    /// The cache layer of each model layer; nil for a sliding-window layer.
    private let cacheLayer: [Int?]
    /// The window of each sliding-window layer (nil for the others).
    private var windows: [SlidingWindowKV?]
    /// Position of the next token.
    public private(set) var position: Int = 0

    // Scratch of one decode step, allocated once.
    private var x, h, q, k, v, att, gate, up: [Float]
    private var logits: [Float]

    /// A session whose cache holds up to `capacity` tokens per layer under `policy` (a
    /// sliding-window layer holds its window, dense).
    ///
    /// - Throws: ``ModelError/tooManyTokens(tokens:limit:)`` when `capacity` is not in
    ///   `1...config.maxPositions + 1`, ``ModelError/invalidConfig(key:detail:)`` when every layer
    ///   slides, and the cache's errors.
    public init(model: LlamaModel, policy: CompressionPolicy, capacity: Int) throws {
        self.model = model
        let c = model.config
        guard capacity >= 1, capacity <= c.maxPositions + 1 else {
            throw ModelError.tooManyTokens(tokens: capacity, limit: c.maxPositions + 1)
        }
        let cached = c.cachedLayers
        guard !cached.isEmpty else {
            throw ModelError.invalidConfig(key: "\(c.architecture.name).attention.sliding_window",
                                           detail: "every one of the \(c.layers) layers slides: none for the SparKV cache")
        }
        cache = try KVCache(shape: c.cacheShape(capacity: capacity), policy: policy)
        var cacheLayer = [Int?](repeating: nil, count: c.layers)
        for (index, layer) in cached.enumerated() { cacheLayer[layer] = index }
        self.cacheLayer = cacheLayer
        windows = (0..<c.layers).map { layer in
            guard let window = c.architecture.slidingWindow, cacheLayer[layer] == nil else { return nil }
            return SlidingWindowKV(window: window, kvHeads: c.kvHeads, headDim: c.headDim)
        }
        (x, h, q, att, k, v, gate, up, logits) = Self.scratch(c)
    }

    /// A session continuing from an existing cache (say one loaded with ``KVCache/init(contentsOf:expectedShape:)``)
    /// whose next token sits at `position`: ``step(token:)`` appends to it from there.
    ///
    /// - Throws: ``ModelError/invalidConfig(key:detail:)`` when the cache's shape is not the model's
    ///   (cached layers, heads, head dimension) or the model has sliding-window layers (their keys
    ///   live outside the cache), ``ModelError/tooManyTokens(tokens:limit:)`` for a position beyond
    ///   the model's.
    public init(model: LlamaModel, cache: KVCache, position: Int) throws {
        self.model = model
        let c = model.config
        let s = cache.shape
        guard c.cachedLayers.count == c.layers else {
            throw ModelError.invalidConfig(key: "\(c.architecture.name).attention.sliding_window",
                                           detail: "sliding-window layers keep keys outside the SparKV cache: a saved cache cannot resume them")
        }
        guard s.layers == c.layers, s.queryHeads == c.queryHeads, s.kvHeads == c.kvHeads, s.headDim == c.headDim else {
            throw ModelError.invalidConfig(key: "cache shape", detail: "\(s.layers) layers, \(s.queryHeads)/\(s.kvHeads) heads, "
                                           + "head_dim \(s.headDim); the model has \(c.layers), \(c.queryHeads)/\(c.kvHeads), \(c.headDim)")
        }
        guard position >= 0, position <= c.maxPositions else {
            throw ModelError.tooManyTokens(tokens: position, limit: c.maxPositions)
        }
        self.cache = cache
        self.position = position
        cacheLayer = (0..<c.layers).map { $0 }
        windows = [SlidingWindowKV?](repeating: nil, count: c.layers)
        (x, h, q, att, k, v, gate, up, logits) = Self.scratch(c)
    }

    /// The zeroed scratch of one decode step: x, h, q, att, k, v, gate, up, logits.
    private static func scratch(_ c: LlamaConfig)
        -> ([Float], [Float], [Float], [Float], [Float], [Float], [Float], [Float], [Float]) {
        func zeros(_ n: Int) -> [Float] { .init(repeating: 0, count: n) }
        return (zeros(c.hidden), zeros(c.hidden), zeros(c.queryHeads * c.headDim), zeros(c.queryHeads * c.headDim),
                zeros(c.kvHeads * c.headDim), zeros(c.kvHeads * c.headDim), zeros(c.feedForward), zeros(c.feedForward),
                zeros(c.vocabularySize))
    }

    /// Compresses a prefilled prompt into the cache (every cached layer; a sliding-window layer
    /// keeps the prompt's last window) and returns the logits of its last position. The session
    /// must be empty.
    @discardableResult
    public func load(_ state: PromptState) throws -> ArraySlice<Float> {
        let n = state.tokens.count
        guard state.keys.count == model.config.layers, state.values.count == model.config.layers,
              state.windowQueries.count == model.config.layers else {
            throw ModelError.invalidConfig(key: "prompt state",
                                           detail: "\(state.keys.count) layers, the model has \(model.config.layers)")
        }
        for layer in 0..<model.config.layers {
            guard let cached = cacheLayer[layer] else {
                windows[layer]?.load(keys: state.keys[layer], values: state.values[layer], tokens: n)
                continue
            }
            try cache.prefill(layer: cached, keys: state.keys[layer], values: state.values[layer],
                              windowQueries: state.windowQueries[layer], tokenCount: n,
                              windowCount: state.windowCount)
        }
        position = n
        return state.lastLogits
    }

    /// Runs one token at the next position and returns the logits of the token after it.
    public func step(token: Int) throws -> [Float] {
        let c = model.config
        guard position < c.maxPositions else {
            throw ModelError.tooManyTokens(tokens: position + 1, limit: c.maxPositions)
        }
        try x.withUnsafeMutableBufferPointer { try model.embed(token, into: $0.baseAddress!) }
        var pos = [Int32(position)]
        for (layer, block) in model.blocks.enumerated() {
            svm_rmsnorm(x, block.attentionNorm, 1, Int32(c.hidden), c.rmsEpsilon, &h)
            try model.attentionInputs(block, layer: layer, n: 1, h: h, positions: &pos, q: &q, k: &k, v: &v)
            if let cached = cacheLayer[layer] {
                // one token: token-major [1][heads][d] is SparKV's [heads][d]
                // the step's query feeds decode-time compression (CompressionPolicy.decodeCompression)
                try cache.append(layer: cached, keys: k, values: v, query: q)
                try cache.attend(layer: cached, query: q, into: &att)
            } else {
                windows[layer]?.append(position: position, key: k, value: v)
                try windows[layer]?.attend(query: q, queryHeads: c.queryHeads, scale: model.attentionScale, into: &att)
            }
            try model.residualAndFFN(block, n: 1, x: &x, h: &h, att: att, gate: &gate, up: &up)
        }
        svm_rmsnorm(x, model.outputNorm, 1, Int32(c.hidden), c.rmsEpsilon, &h)
        try model.output.apply(h, 1, &logits, exact: model.exactMatmul)
        position += 1
        return logits
    }

    /// Bytes the sliding-window layers hold (dense float32 keys and values of their windows), apart
    /// from ``cache``'s memory report; 0 for a model without sliding windows.
    public var slidingWindowBytes: Int { windows.reduce(0) { $0 + ($1?.bytes ?? 0) } }

    /// The index of the largest logit (greedy decoding; the lowest index on ties), counted from the
    /// start of `logits`.
    public static func greedy(_ logits: ArraySlice<Float>) -> Int {
        logits.withUnsafeBufferPointer { argmaxIndex($0) }
    }

    /// The index of the largest logit (greedy decoding; the lowest index on ties).
    public static func greedy(_ logits: [Float]) -> Int {
        logits.withUnsafeBufferPointer { argmaxIndex($0) }
    }
}

/// Index of the largest element (the lowest index on ties); 0 for an empty buffer.
func argmaxIndex(_ x: UnsafeBufferPointer<Float>) -> Int {
    var best = 0
    var value = x.first ?? 0
    for i in 1..<max(x.count, 1) where x[i] > value { best = i; value = x[i] }
    return best
}
