import CSparKVModel
import SparKV

/// One weight matrix `[rows][cols]` inside the GGUF mapping.
struct LlamaWeight {
    let name: String
    let data: UnsafeRawPointer
    let type: svm_type
    let rows: Int
    let cols: Int

    init(_ file: GGUFFile, _ name: String) throws {
        let t = try file.tensor(named: name)
        guard let type = svm_type(ggml: t.type) else {
            throw ModelError.unsupportedWeight(
                tensor: name, detail: "type \(t.type) is not " + LlamaConfig.matrixTypes.map(\.name).joined(separator: ", "))
        }
        self.name = name
        self.data = t.data
        self.type = type
        self.cols = t.rowLength
        self.rows = t.rowCount
    }

    /// y[n][rows] = x[n][cols] . W^T; `exact`: dequantize the weights and multiply in float
    /// instead of quantizing the activations to 8 bits (slower; see LlamaModel.exactMatmul).
    func apply(_ x: UnsafePointer<Float>, _ n: Int, _ y: UnsafeMutablePointer<Float>, exact: Bool = false) throws {
        let status = exact ? svm_matmul_exact(data, type, Int32(rows), Int32(cols), x, Int32(n), y)
                           : svm_matmul(data, type, Int32(rows), Int32(cols), x, Int32(n), y)
        try svmCheck(status, "matmul \(name)")
    }
}

extension svm_type {
    init?(ggml: GGUFTensorType) {
        switch ggml {
        case .f32: self = SVM_F32
        case .f16: self = SVM_F16
        case .q4_1: self = SVM_Q4_1
        case .q8_0: self = SVM_Q8_0
        case .q5_0: self = SVM_Q5_0
        case .q4_K: self = SVM_Q4_K
        case .q6_K: self = SVM_Q6_K
        default: return nil
        }
    }
}

func svmCheck(_ status: svm_status, _ call: @autoclosure () -> String) throws {
    guard status == SVM_OK else {
        throw ModelError.kernel(status: status.rawValue, call: call(), message: String(cString: svm_status_string(status)))
    }
}

/// The weights of one transformer block; the optional parts are there exactly when the
/// architecture has them (``ModelArchitecture``).
struct LlamaBlock {
    let q, k, v, o, gate, up, down: LlamaWeight
    let attentionNorm: [Float]
    let ffnNorm: [Float]
    /// Q, K, V biases (Qwen2).
    var qBias, kBias, vBias: [Float]?
    /// Per-head RMSNorm weights of queries and keys, `[headDim]` (Gemma 3).
    var qNorm, kNorm: [Float]?
    /// RMSNorm weights of the attention and feed-forward outputs (Gemma 3).
    var postAttentionNorm, postFFNNorm: [Float]?
}

/// A decoder-only model (Llama such as SmolLM2-135M-Instruct, Qwen2, Gemma 3: the differences
/// are data, ``LlamaConfig/architecture``) loaded from a GGUF file, run on the CPU with the
/// quantized kernels of `CSparKVModel`. The weights stay in the file's memory mapping.
///
/// A prompt is run once, densely, by ``prefill(tokens:window:allLogits:)``, which returns the
/// policy-independent ``PromptState`` (every layer's keys, values and observation-window
/// queries). A ``LlamaSession`` then loads that state into a SparKV ``KVCache`` under any
/// compression policy and decodes from it, so several policies can be compared on one prefill.
///
/// ```swift
/// let model = try LlamaModel(path: "models/SmolLM2-135M-Instruct.Q4_1.gguf")
/// let state = try model.prefill(tokens: prompt)
/// let session = try LlamaSession(model: model, policy: .spark(ratio: 0.8), capacity: prompt.count + 64)
/// var logits = try session.load(state)
/// let next = logits.indices.max { logits[$0] < logits[$1] }!
/// logits = try session.step(token: next)
/// ```
///
/// Thread safety: a model may be shared by sessions used one at a time; the kernels' thread count
/// is process-wide (``threads``).
public final class LlamaModel: @unchecked Sendable {
    /// The GGUF file (kept open: the weights live in its mapping).
    public let file: GGUFFile
    /// The model's hyper-parameters.
    public internal(set) var config: LlamaConfig
    let embedding: LlamaWeight
    let output: LlamaWeight
    let outputNorm: [Float]
    let blocks: [LlamaBlock]

    /// Opens a GGUF file and locates every weight.
    public convenience init(path: String) throws {
        try self.init(file: try GGUFFile(path: path))
    }

    /// Locates every weight of an open GGUF file, after checking every tensor's type and shape
    /// against the architecture's table (see ``LlamaConfig/validateTensors(of:)``): the kernels
    /// are handed only tensors of the sizes they assume.
    ///
    /// - Throws: the errors of ``LlamaConfig/init(gguf:)``.
    public init(file: GGUFFile) throws {
        self.file = file
        config = try LlamaConfig(gguf: file)
        embedding = try LlamaWeight(file, "token_embd.weight")
        // tied embeddings: no output.weight, the embedding matrix projects to the vocabulary
        output = config.architecture.tiedOutput ? embedding : try LlamaWeight(file, "output.weight")
        outputNorm = try file.tensor(named: "output_norm.weight").dequantizeRow(0)
        var blocks: [LlamaBlock] = []
        let arch = config.architecture
        for l in 0..<config.layers {
            func w(_ n: String) throws -> LlamaWeight { try LlamaWeight(file, "blk.\(l).\(n).weight") }
            func vector(_ n: String) throws -> [Float] { try file.tensor(named: "blk.\(l).\(n)").dequantizeRow(0) }
            var block = LlamaBlock(
                q: try w("attn_q"), k: try w("attn_k"), v: try w("attn_v"), o: try w("attn_output"),
                gate: try w("ffn_gate"), up: try w("ffn_up"), down: try w("ffn_down"),
                attentionNorm: try vector("attn_norm.weight"), ffnNorm: try vector("ffn_norm.weight"))
            if arch.hasQKVBias {
                block.qBias = try vector("attn_q.bias")
                block.kBias = try vector("attn_k.bias")
                block.vBias = try vector("attn_v.bias")
            }
            if arch.hasQKNorm {
                block.qNorm = try vector("attn_q_norm.weight")
                block.kNorm = try vector("attn_k_norm.weight")
            }
            if arch.hasPostNorms {
                block.postAttentionNorm = try vector("post_attention_norm.weight")
                block.postFFNNorm = try vector("post_ffw_norm.weight")
            }
            blocks.append(block)
        }
        self.blocks = blocks
    }

    /// Multiply by the weights exactly (dequantized, float activations) instead of with 8-bit
    /// activations. The 8-bit path (llama.cpp's) is several times faster, but its rounding is
    /// discontinuous: two computations that differ by float rounding can round an activation to
    /// different integers, and the difference grows over the layers. Tests that compare two
    /// attention paths to float precision use the exact path.
    public var exactMatmul = false

    /// Most threads ``setThreads(_:)`` accepts.
    public static let maxThreads = ModelLimits.maxThreads

    /// Threads of the model's kernels (process-wide); set with ``setThreads(_:)``.
    public static var threads: Int { Int(svm_get_threads()) }

    /// Sets the threads of the model's kernels (process-wide); nil or 0 restores OpenMP's default.
    ///
    /// ```swift
    /// try LlamaModel.setThreads(2)
    /// ```
    /// - Throws: ``ModelError/invalidThreads(_:)`` outside `0...maxThreads`.
    public static func setThreads(_ count: Int?) throws {
        let n = count ?? 0
        guard (0...maxThreads).contains(n) else { throw ModelError.invalidThreads(n) }
        svm_set_threads(Int32(n))   // in range: the conversion cannot trap
    }

    /// The model's name for reports: `general.name`, else the architecture's name.
    public var displayName: String {
        file.metadata["general.name"]?.string ?? config.architecture.name
    }

    /// The softmax scale of attention: 1/sqrt(headDim) (also Gemma 3's below 27B).
    public var attentionScale: Float { 1 / Float(config.headDim).squareRoot() }

    func embed(_ token: Int, into out: UnsafeMutablePointer<Float>) throws {
        guard token >= 0, token < config.vocabularySize else {
            throw ModelError.badToken(id: token, vocabularySize: config.vocabularySize)
        }
        try svmCheck(svm_embed_row(embedding.data, embedding.type, Int32(token), Int32(config.hidden), out), "embed")
        if config.architecture.scalesEmbedding {
            // Gemma: the embedding times sqrt(hidden), rounded to float as its reference does.
            let scale = Float(config.hidden).squareRoot()
            for i in 0..<config.hidden { out[i] *= scale }
        }
    }

    /// The attention inputs of `n` tokens at `positions` from the normalized hidden states
    /// `h[n][hidden]`: `q[n][queryHeads][headDim]`, `k` and `v` `[n][kvHeads][headDim]`, with the
    /// architecture's biases, QK-norm and RoPE applied (queries and keys rotated). Prefill and
    /// decode both call this, so their keys agree.
    func attentionInputs(_ block: LlamaBlock, layer: Int, n: Int, h: UnsafePointer<Float>, positions: UnsafePointer<Int32>,
                         q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) throws {
        let c = config, arch = c.architecture, d = c.headDim
        let qw = c.queryHeads * d, kw = c.kvHeads * d
        try block.q.apply(h, n, q, exact: exactMatmul)
        try block.k.apply(h, n, k, exact: exactMatmul)
        try block.v.apply(h, n, v, exact: exactMatmul)
        for (out, bias, width) in [(q, block.qBias, qw), (k, block.kBias, kw), (v, block.vBias, kw)] {
            guard let bias else { continue }
            for t in 0..<n { svm_add(out + t * width, bias, Int64(width), out + t * width) }
        }
        if let qNorm = block.qNorm, let kNorm = block.kNorm {
            svm_rmsnorm(q, qNorm, Int32(n * c.queryHeads), Int32(d), c.rmsEpsilon, q)
            svm_rmsnorm(k, kNorm, Int32(n * c.kvHeads), Int32(d), c.rmsEpsilon, k)
        }
        let base = arch.ropeBase(layer: layer)
        try arch.ropeStyle.rotate(q, tokens: n, heads: c.queryHeads, headDim: d, positions: positions, base: base)
        try arch.ropeStyle.rotate(k, tokens: n, heads: c.kvHeads, headDim: d, positions: positions, base: base)
    }

    /// Runs `tokens` (positions 0..<n) through every layer with dense causal attention.
    ///
    /// - Parameters:
    ///   - window: observation-window length (last `window` positions' post-RoPE queries are kept
    ///     for SparK/SnapKV), clamped to the prompt length.
    ///   - allLogits: also return the logits of every position (`[n][vocab]`; memory grows as
    ///     n * vocab * 4 bytes), else only the last position's.
    ///   - layerDone: called after each layer with the number of layers done (for progress reports
    ///     of long prompts), on the calling thread.
    public func prefill(tokens: [Int], window: Int = 32, allLogits: Bool = false,
                        layerDone: (Int) -> Void = { _ in }) throws -> PromptState {
        let n = tokens.count
        guard n > 0 else { throw ModelError.emptyPrompt }
        let c = config
        // Also keeps every n x width product below (scratch sizes, Int32 kernel arguments) in range.
        guard n <= c.contextLength else { throw ModelError.promptTooLong(tokens: n, contextLength: c.contextLength) }
        let d = c.headDim, qw = c.queryHeads * d, kw = c.kvHeads * d
        let w = max(1, min(window, n))
        var x = [Float](repeating: 0, count: n * c.hidden)
        var h = [Float](repeating: 0, count: n * c.hidden)
        var q = [Float](repeating: 0, count: n * qw)
        var k = [Float](repeating: 0, count: n * kw)
        var v = [Float](repeating: 0, count: n * kw)
        var att = [Float](repeating: 0, count: n * qw)
        var gate = [Float](repeating: 0, count: n * c.feedForward)
        var up = [Float](repeating: 0, count: n * c.feedForward)
        let positions = (0..<n).map { Int32($0) }
        var keys: [[Float]] = [], values: [[Float]] = [], windows: [[Float]] = []
        keys.reserveCapacity(c.layers); values.reserveCapacity(c.layers); windows.reserveCapacity(c.layers)

        try x.withUnsafeMutableBufferPointer { xb in
            for (i, t) in tokens.enumerated() { try embed(t, into: xb.baseAddress! + i * c.hidden) }
        }
        for (layer, block) in blocks.enumerated() {
            svm_rmsnorm(x, block.attentionNorm, Int32(n), Int32(c.hidden), c.rmsEpsilon, &h)
            try attentionInputs(block, layer: layer, n: n, h: h, positions: positions, q: &q, k: &k, v: &v)
            if let window = c.architecture.slidingWindow, c.architecture.isSlidingWindow(layer: layer), n > window {
                try slidingWindowAttention(q: q, k: k, v: v, tokens: n, queryHeads: c.queryHeads, kvHeads: c.kvHeads,
                                           headDim: d, window: window, scale: attentionScale, out: &att)
            } else {
                try svmCheck(svm_causal_attention(q, k, v, Int32(n), Int32(c.queryHeads), Int32(c.kvHeads), Int32(d),
                                                  attentionScale, &att), "causal attention")
            }
            keys.append(headMajor(k, tokens: n, heads: c.kvHeads, headDim: d, from: 0))
            values.append(headMajor(v, tokens: n, heads: c.kvHeads, headDim: d, from: 0))
            windows.append(headMajor(q, tokens: n, heads: c.queryHeads, headDim: d, from: n - w))
            try residualAndFFN(block, n: n, x: &x, h: &h, att: att, gate: &gate, up: &up)
            layerDone(keys.count)
        }
        let rows = allLogits ? n : 1
        var logits = [Float](repeating: 0, count: rows * c.vocabularySize)
        try x.withUnsafeBufferPointer { xb in
            try h.withUnsafeMutableBufferPointer { hb in
                let from = xb.baseAddress! + (n - rows) * c.hidden
                svm_rmsnorm(from, outputNorm, Int32(rows), Int32(c.hidden), c.rmsEpsilon, hb.baseAddress!)
                try output.apply(hb.baseAddress!, rows, &logits, exact: exactMatmul)
            }
        }
        return PromptState(tokens: tokens, keys: keys, values: values, windowQueries: windows, windowCount: w,
                           logits: logits, logitRows: rows)
    }

    /// x += post(Wo.att); x += post(Wdown.act(Wgate.h) * Wup.h) with h = rmsnorm(x) — the rest of
    /// a block (post: the architecture's post-norms, if any; act: its activation).
    func residualAndFFN(_ block: LlamaBlock, n: Int, x: inout [Float], h: inout [Float], att: [Float],
                        gate: inout [Float], up: inout [Float]) throws {
        let c = config
        try block.o.apply(att, n, &h, exact: exactMatmul)
        if let norm = block.postAttentionNorm { svm_rmsnorm(h, norm, Int32(n), Int32(c.hidden), c.rmsEpsilon, &h) }
        svm_add(x, h, Int64(n * c.hidden), &x)
        svm_rmsnorm(x, block.ffnNorm, Int32(n), Int32(c.hidden), c.rmsEpsilon, &h)
        try block.gate.apply(h, n, &gate, exact: exactMatmul)
        try block.up.apply(h, n, &up, exact: exactMatmul)
        gate.withUnsafeMutableBufferPointer { g in
            c.architecture.activation.gate(g.baseAddress!, up, count: n * c.feedForward)
        }
        try block.down.apply(gate, n, &h, exact: exactMatmul)
        if let norm = block.postFFNNorm { svm_rmsnorm(h, norm, Int32(n), Int32(c.hidden), c.rmsEpsilon, &h) }
        svm_add(x, h, Int64(n * c.hidden), &x)
    }
}

extension LlamaConfig {
    /// The layers whose keys and values a SparKV cache holds: all but the sliding-window layers
    /// (which keep their window in a ``SlidingWindowKV``).
    public var cachedLayers: [Int] { (0..<layers).filter { !architecture.isSlidingWindow(layer: $0) } }

    /// The shape of a SparKV cache for this model holding up to `capacity` tokens per layer of
    /// ``cachedLayers``.
    public func cacheShape(capacity: Int) -> ModelShape {
        ModelShape(layers: cachedLayers.count, queryHeads: queryHeads, kvHeads: kvHeads, headDim: headDim, capacity: capacity)
    }
}

/// Token-major `[n][heads][d]` rows from..<n to head-major `[heads][n - from][d]` (SparKV's layout).
func headMajor(_ x: [Float], tokens n: Int, heads: Int, headDim d: Int, from: Int) -> [Float] {
    let m = n - from
    var out = [Float](repeating: 0, count: heads * m * d)
    x.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            for t in 0..<m {
                for hd in 0..<heads {
                    let s = src.baseAddress! + ((from + t) * heads + hd) * d
                    (dst.baseAddress! + (hd * m + t) * d).update(from: s, count: d)
                }
            }
        }
    }
    return out
}

/// What a dense prefill of a prompt leaves behind, independent of any compression policy: every
/// layer's RoPE-rotated keys and values `[kvHeads][n][headDim]`, its last `windowCount` queries
/// `[queryHeads][windowCount][headDim]`, and logits.
public struct PromptState: Sendable {
    /// The prompt's token ids.
    public let tokens: [Int]
    /// Per layer: keys `[kvHeads][n][headDim]`.
    public let keys: [[Float]]
    /// Per layer: values `[kvHeads][n][headDim]`.
    public let values: [[Float]]
    /// Per layer: the observation window's queries `[queryHeads][windowCount][headDim]`.
    public let windowQueries: [[Float]]
    /// Rows of each entry of ``windowQueries``.
    public let windowCount: Int
    /// `[logitRows][vocab]`: the last `logitRows` positions' next-token logits.
    public let logits: [Float]
    /// 1, or the prompt length when every position's logits were asked for.
    public let logitRows: Int

    /// The last position's logits (the prediction of the first generated token).
    public var lastLogits: ArraySlice<Float> {
        let vocab = logits.count / logitRows
        return logits[(logitRows - 1) * vocab..<logitRows * vocab]
    }
}
