/// How one family of decoder-only transformers arranges its blocks: the differences between
/// Llama, Qwen2 and Gemma 3 as data, read from a GGUF file's metadata, so that one forward pass
/// (``LlamaModel``) runs all of them and a file of any other family is refused by name.
///
/// ```swift
/// let arch = try ModelArchitecture(gguf: file)
/// arch.name                  // "qwen2"
/// arch.ropeStyle             // .halfSplit (NEOX)
/// arch.hasQKVBias            // true
/// arch.ropeBase(layer: 0)    // 1_000_000
/// ```
public struct ModelArchitecture: Hashable, Codable, Sendable {
    /// Which channels of a head RoPE rotates together.
    public enum RoPEStyle: String, Hashable, Codable, Sendable {
        /// Channels `(2i, 2i+1)`: GGUF llama (its converter permutes Q/K rows into this order).
        case adjacentPairs
        /// Channels `(i, i + headDim/2)`: GPT-NeoX's layout, used as trained by Qwen2 and Gemma.
        case halfSplit
    }

    /// The gate's non-linearity of the gated feed-forward layer, `down(act(gate(h)) * up(h))`.
    public enum Activation: String, Hashable, Codable, Sendable {
        /// x * sigmoid(x) (SwiGLU): Llama, Qwen2.
        case silu
        /// GELU, tanh approximation (GeGLU): Gemma.
        case geluTanh
    }

    /// `general.architecture`: "llama", "qwen2" or "gemma3".
    public var name: String
    /// RoPE channel pairing.
    public var ropeStyle: RoPEStyle
    /// Feed-forward activation.
    public var activation: Activation
    /// Q, K and V projections add a bias (`blk.N.attn_{q,k,v}.bias`): Qwen2.
    public var hasQKVBias: Bool
    /// Each query and key head is RMS-normalized before RoPE (`blk.N.attn_{q,k}_norm.weight`,
    /// `[headDim]`): Gemma 3.
    public var hasQKNorm: Bool
    /// The attention and feed-forward outputs are RMS-normalized before their residual add
    /// (`blk.N.post_attention_norm.weight`, `blk.N.post_ffw_norm.weight`): Gemma 2/3.
    public var hasPostNorms: Bool
    /// Token embeddings are multiplied by sqrt(hidden) before the first block: Gemma.
    public var scalesEmbedding: Bool
    /// RoPE base of the global (full-attention) layers (`<arch>.rope.freq_base`).
    public var globalRoPEBase: Float
    /// Tokens a sliding-window layer attends to, itself included (`<arch>.attention.sliding_window`),
    /// nil when every layer attends to the whole context.
    public var slidingWindow: Int?
    /// With a ``slidingWindow``: every `slidingWindowPattern`-th layer (1-based) is global, the
    /// others slide (Gemma 3: 6, so 5 of 6 layers slide).
    public var slidingWindowPattern: Int
    /// RoPE base of the sliding-window layers (Gemma 3: 10 000, fixed by the architecture).
    public var slidingRoPEBase: Float
    /// The output projection is the token embedding (the file has no `output.weight`).
    public var tiedOutput: Bool

    /// The families with a forward pass here.
    public static let supportedNames = ["llama", "qwen2", "gemma3"]

    /// Whether `layer` (0-based) attends only to the last ``slidingWindow`` tokens.
    public func isSlidingWindow(layer: Int) -> Bool {
        guard slidingWindow != nil, slidingWindowPattern > 0 else { return false }
        return (layer + 1) % slidingWindowPattern != 0
    }

    /// The RoPE base of `layer`.
    public func ropeBase(layer: Int) -> Float {
        isSlidingWindow(layer: layer) ? slidingRoPEBase : globalRoPEBase
    }

    /// The description of a named family with the default numbers (no sliding window, RoPE base
    /// 10 000); ``init(gguf:)`` fills the numbers from metadata.
    ///
    /// - Throws: ``ModelError/unsupportedArchitecture(_:)`` for a family not in ``supportedNames``.
    public init(family name: String) throws {
        self.name = name
        globalRoPEBase = 10_000
        slidingWindow = nil
        slidingWindowPattern = 0
        slidingRoPEBase = 10_000
        tiedOutput = false
        switch name {
        case "llama":
            (ropeStyle, activation) = (.adjacentPairs, .silu)
            (hasQKVBias, hasQKNorm, hasPostNorms, scalesEmbedding) = (false, false, false, false)
        case "qwen2":
            (ropeStyle, activation) = (.halfSplit, .silu)
            (hasQKVBias, hasQKNorm, hasPostNorms, scalesEmbedding) = (true, false, false, false)
        case "gemma3":
            (ropeStyle, activation) = (.halfSplit, .geluTanh)
            (hasQKVBias, hasQKNorm, hasPostNorms, scalesEmbedding) = (false, true, true, true)
            slidingWindowPattern = 6   // llama.cpp: hparams.set_swa_pattern(6)
        default:
            throw ModelError.unsupportedArchitecture(name)
        }
    }

    /// Reads `general.architecture` and the family's numbers: `<arch>.rope.freq_base` (10 000 when
    /// absent) and, for Gemma 3, `<arch>.attention.sliding_window` (required); ``tiedOutput`` when
    /// the file has no `output.weight`.
    ///
    /// - Throws: ``ModelError/unsupportedArchitecture(_:)``; ``GGUFError/missingKey(_:)`` for a
    ///   required key; ``ModelError/invalidConfig(key:detail:)`` for a value out of range or a RoPE
    ///   scaling this forward pass does not implement.
    public init(gguf file: GGUFFile) throws {
        try self.init(family: try file.string("general.architecture"))
        tiedOutput = !file.hasTensor(named: "output.weight")
        let base = "\(name).rope.freq_base"
        if file.metadata[base] != nil {
            let value = try file.float(base)
            guard value.isFinite, value > 0 else {
                throw ModelError.invalidConfig(key: base, detail: "\(value) must be finite and positive")
            }
            globalRoPEBase = value
        }
        // A scaled RoPE (linear, YaRN) would run, unscaled, with wrong positions: refuse it.
        let scaling = "\(name).rope.scaling.type"
        if let type = file.metadata[scaling]?.string, type != "none" {
            throw ModelError.invalidConfig(key: scaling, detail: "RoPE scaling \"\(type)\" is not implemented")
        }
        if slidingWindowPattern > 0 {
            let key = "\(name).attention.sliding_window"
            let window = try file.int(key)
            guard (1...ModelLimits.maxContextLength).contains(window) else {
                throw ModelError.invalidConfig(key: key, detail: "\(window) is not in 1...\(ModelLimits.maxContextLength)")
            }
            slidingWindow = window
        }
    }
}
