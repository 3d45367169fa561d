import SparKV

/// Hyper-parameters of a Llama-architecture GGUF model, read from its metadata.
///
/// ```swift
/// let config = try LlamaConfig(gguf: file)
/// print(config.layers, config.queryHeads, config.kvHeads, config.headDim)   // 30 9 3 64 for SmolLM2-135M
/// ```
public struct LlamaConfig: Hashable, Codable, Sendable {
    /// Transformer blocks (`llama.block_count`).
    public var layers: Int
    /// Width of the residual stream (`llama.embedding_length`).
    public var hidden: Int
    /// Width of the SwiGLU feed-forward layer (`llama.feed_forward_length`).
    public var feedForward: Int
    /// Query heads (`llama.attention.head_count`).
    public var queryHeads: Int
    /// Key/value heads (`llama.attention.head_count_kv`).
    public var kvHeads: Int
    /// Channels per head: `hidden / queryHeads` (or `llama.rope.dimension_count`).
    public var headDim: Int
    /// RoPE base frequency (`llama.rope.freq_base`, 10000 when absent).
    public var ropeBase: Float
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    public var rmsEpsilon: Float
    /// Training context length (`llama.context_length`).
    public var contextLength: Int
    /// Vocabulary size (rows of `token_embd.weight`).
    public var vocabularySize: Int

    /// Reads the hyper-parameters of the file's `general.architecture` (normally "llama").
    public init(gguf file: GGUFFile) throws {
        let arch = (try? file.string("general.architecture")) ?? "llama"
        func key(_ k: String) -> String { "\(arch).\(k)" }
        layers = try file.int(key("block_count"))
        hidden = try file.int(key("embedding_length"))
        feedForward = try file.int(key("feed_forward_length"))
        queryHeads = try file.int(key("attention.head_count"))
        kvHeads = (try? file.int(key("attention.head_count_kv"))) ?? queryHeads
        headDim = (try? file.int(key("rope.dimension_count"))) ?? hidden / max(queryHeads, 1)
        ropeBase = (try? file.float(key("rope.freq_base"))) ?? 10000
        rmsEpsilon = (try? file.float(key("attention.layer_norm_rms_epsilon"))) ?? 1e-5
        contextLength = (try? file.int(key("context_length"))) ?? 2048
        vocabularySize = try file.tensor(named: "token_embd.weight").rowCount
        guard layers > 0, hidden > 0, queryHeads > 0, kvHeads > 0, queryHeads % kvHeads == 0,
              headDim * queryHeads == hidden, headDim % 2 == 0 else {
            throw GGUFError.invalidFile(
                "inconsistent head layout: hidden \(hidden), heads \(queryHeads)/\(kvHeads), head_dim \(headDim)")
        }
    }

    /// The shape of a SparKV cache for this model holding up to `capacity` tokens per layer.
    public func cacheShape(capacity: Int) -> ModelShape {
        ModelShape(layers: layers, queryHeads: queryHeads, kvHeads: kvHeads, headDim: headDim, capacity: capacity)
    }
}
