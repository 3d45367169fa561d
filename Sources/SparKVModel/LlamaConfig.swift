/// Bounds on what the model path accepts from files and arguments, so that every size it
/// computes fits the kernels' 32-bit arguments and no product overflows.
public enum ModelLimits {
    /// Most kernel threads accepted (the C libraries reject more; libomp aborts the process when
    /// it cannot create the threads asked for).
    public static let maxThreads = 1024
    /// Largest `context_length` accepted: decoding may run to 4x the context (see
    /// ``LlamaConfig/maxPositions``), and positions are 32-bit in the RoPE kernels.
    public static let maxContextLength = Int(Int32.max) / 4
    /// Largest width (hidden, feed-forward, heads x head_dim, vocabulary) accepted: kernel
    /// arguments are 32-bit.
    public static let maxWidth = Int(Int32.max)
}

/// Hyper-parameters of a decoder-only GGUF model (Llama, Qwen2, Gemma 3: see
/// ``ModelArchitecture``), read from its metadata and checked against each other and against the
/// file's tensors.
///
/// ```swift
/// let config = try LlamaConfig(gguf: file)
/// print(config.layers, config.queryHeads, config.kvHeads, config.headDim)   // 30 9 3 64 for SmolLM2-135M
/// ```
public struct LlamaConfig: Hashable, Codable, Sendable {
    /// What the model's family does differently (biases, RoPE style, norms, activation, ...).
    public var architecture: ModelArchitecture
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
    /// Channels per head: `<arch>.attention.key_length` when present (Gemma 3: 256 with hidden 640
    /// and 4 heads), else `<arch>.rope.dimension_count`, else `hidden / queryHeads`.
    public var headDim: Int
    /// RoPE base frequency of the global layers (`llama.rope.freq_base`, 10000 when absent; see
    /// ``ModelArchitecture/ropeBase(layer:)`` for the per-layer base).
    public var ropeBase: Float
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    public var rmsEpsilon: Float
    /// Training context length (`llama.context_length`, 2048 when absent): the longest prompt
    /// accepted.
    public var contextLength: Int
    /// Vocabulary size (rows of `token_embd.weight`).
    public var vocabularySize: Int

    /// The architectures with a tensor table (``expectedTensors()``).
    public static let supportedArchitectures = ModelArchitecture.supportedNames

    /// Positions a session may decode to: 4x the context (quality degrades past the context, but
    /// nothing breaks); the prompt itself must fit in ``contextLength``.
    public var maxPositions: Int { contextLength * 4 }

    /// Reads the hyper-parameters of the file's `general.architecture` (which must be one of
    /// ``supportedArchitectures``; see ``ModelArchitecture/init(gguf:)``) and checks them and
    /// every tensor of the file against the architecture's table (``validateTensors(of:)``), so
    /// that a model built from them never reads outside a tensor.
    ///
    /// - Throws: ``ModelError/unsupportedArchitecture(_:)``, ``ModelError/invalidConfig(key:detail:)``,
    ///   ``GGUFError/missingKey(_:)``, ``GGUFError/metadataType(key:expected:found:)``, and the
    ///   errors of ``validateTensors(of:)``.
    public init(gguf file: GGUFFile) throws {
        try self.init(metadataOf: file)
        try validateTensors(of: file)
    }

    /// The hyper-parameters alone, checked against each other but not against the tensors (which
    /// may be of types no kernel here reads): ``init(gguf:)`` without ``validateTensors(of:)``.
    init(metadataOf file: GGUFFile) throws {
        architecture = try ModelArchitecture(gguf: file)
        let arch = architecture.name
        func key(_ k: String) -> String { "\(arch).\(k)" }
        /// An integer key: required when `fallback` is nil; a present key of the wrong type is an
        /// error either way (a silent default would hide a corrupt file).
        func int(_ k: String, _ range: ClosedRange<Int>, fallback: Int? = nil) throws -> Int {
            let name = key(k)
            guard file.metadata[name] != nil || fallback == nil else { return fallback ?? 0 }
            let v = try file.int(name)
            guard range.contains(v) else {
                throw ModelError.invalidConfig(key: name, detail: "\(v) is not in \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        func float(_ k: String, fallback: Float) throws -> Float {
            let name = key(k)
            guard file.metadata[name] != nil else { return fallback }
            let v = try file.float(name)
            guard v.isFinite, v > 0 else { throw ModelError.invalidConfig(key: name, detail: "\(v) must be finite and positive") }
            return v
        }
        // A model has at least one tensor per layer, and every tensor is described in the file:
        // this bounds the layer count (and so the table built from it) by the file.
        layers = try int("block_count", 1...max(1, file.tensors.count))
        hidden = try int("embedding_length", 1...ModelLimits.maxWidth)
        feedForward = try int("feed_forward_length", 1...ModelLimits.maxWidth)
        queryHeads = try int("attention.head_count", 1...ModelLimits.maxWidth)
        kvHeads = try int("attention.head_count_kv", 1...queryHeads, fallback: queryHeads)
        let declaresHeadDim = file.metadata[key("attention.key_length")] != nil
        if declaresHeadDim {
            headDim = try int("attention.key_length", 2...ModelLimits.maxWidth)
            let valueLength = try int("attention.value_length", 2...ModelLimits.maxWidth, fallback: headDim)
            guard valueLength == headDim else {
                throw ModelError.invalidConfig(key: key("attention.value_length"),
                                               detail: "\(valueLength), but keys have \(headDim) channels")
            }
        } else {
            headDim = try int("rope.dimension_count", 2...ModelLimits.maxWidth, fallback: hidden / queryHeads)
        }
        ropeBase = architecture.globalRoPEBase
        rmsEpsilon = try float("attention.layer_norm_rms_epsilon", fallback: 1e-5)
        contextLength = try int("context_length", 1...ModelLimits.maxContextLength, fallback: 2048)
        vocabularySize = try file.tensor(named: "token_embd.weight").rowCount
        // A declared key_length sets the head width apart from hidden (Gemma 3); otherwise the heads
        // split the residual stream.
        guard queryHeads % kvHeads == 0, declaresHeadDim || headDim * queryHeads == hidden, headDim % 2 == 0,
              headDim <= ModelLimits.maxWidth / queryHeads else {
            throw ModelError.invalidConfig(
                key: "head layout",
                detail: "hidden \(hidden), heads \(queryHeads)/\(kvHeads), head_dim \(headDim): needs "
                    + "head_dim x heads = hidden, heads a multiple of kv heads, an even head_dim")
        }
        guard (1...ModelLimits.maxWidth).contains(vocabularySize) else {
            throw ModelError.invalidConfig(key: "token_embd.weight", detail: "\(vocabularySize) vocabulary rows")
        }
        if file.metadata[key("vocab_size")] != nil {
            let declared = try file.int(key("vocab_size"))
            guard declared == vocabularySize else {
                throw ModelError.invalidConfig(
                    key: key("vocab_size"), detail: "\(declared), but token_embd.weight has \(vocabularySize) rows")
            }
        }
    }

    /// One tensor of an architecture's table.
    public struct TensorSpec: Hashable, Sendable {
        /// The tensor's name in the file.
        public var name: String
        /// Its shape in GGUF order (`shape[0]` is the row length).
        public var shape: [Int]
        /// The types the kernels can read it in.
        public var types: [GGUFTensorType]
        /// Whether the file must have it (`output.weight` is optional: tied embeddings).
        public var required: Bool
    }

    /// Types of the matrices (the quantized matmul and embedding kernels).
    public static let matrixTypes: [GGUFTensorType] = [.f32, .f16, .q8_0, .q4_1, .q5_0, .q4_K, .q6_K]
    /// Types of the RMSNorm weights and the Q/K/V biases (dequantized once at load).
    public static let normTypes: [GGUFTensorType] = [.f32, .f16]

    /// Every tensor of the architecture, with the shape these hyper-parameters give it: the
    /// architecture's complete table.
    ///
    /// ```swift
    /// config.expectedTensors().first   // token_embd.weight [576, 49152] F32/F16/Q8_0/Q4_1/Q5_0/Q4_K/Q6_K
    /// ```
    public func expectedTensors() -> [TensorSpec] {
        let q = queryHeads * headDim, kv = kvHeads * headDim
        func matrix(_ name: String, cols: Int, rows: Int, required: Bool = true) -> TensorSpec {
            TensorSpec(name: name, shape: [cols, rows], types: Self.matrixTypes, required: required)
        }
        func norm(_ name: String, width: Int? = nil) -> TensorSpec {
            TensorSpec(name: name, shape: [width ?? hidden], types: Self.normTypes, required: true)
        }
        let arch = architecture
        var table = [
            matrix("token_embd.weight", cols: hidden, rows: vocabularySize),
            norm("output_norm.weight"),
            matrix("output.weight", cols: hidden, rows: vocabularySize, required: false),
        ]
        table.reserveCapacity(3 + 9 * layers)
        for l in 0..<layers {
            let b = "blk.\(l)."
            table += [
                norm(b + "attn_norm.weight"),
                matrix(b + "attn_q.weight", cols: hidden, rows: q),
                matrix(b + "attn_k.weight", cols: hidden, rows: kv),
                matrix(b + "attn_v.weight", cols: hidden, rows: kv),
                matrix(b + "attn_output.weight", cols: q, rows: hidden),
                norm(b + "ffn_norm.weight"),
                matrix(b + "ffn_gate.weight", cols: hidden, rows: feedForward),
                matrix(b + "ffn_up.weight", cols: hidden, rows: feedForward),
                matrix(b + "ffn_down.weight", cols: feedForward, rows: hidden),
            ]
            if arch.hasQKVBias {
                table += [norm(b + "attn_q.bias", width: q), norm(b + "attn_k.bias", width: kv),
                          norm(b + "attn_v.bias", width: kv)]
            }
            if arch.hasQKNorm {
                table += [norm(b + "attn_q_norm.weight", width: headDim), norm(b + "attn_k_norm.weight", width: headDim)]
            }
            if arch.hasPostNorms {
                table += [norm(b + "post_attention_norm.weight"), norm(b + "post_ffw_norm.weight")]
            }
        }
        return table
    }

    /// Checks every tensor of `file` against ``expectedTensors()``: each expected tensor is there
    /// (unless optional) with exactly the expected shape and one of the expected types, and the
    /// file holds no other tensor.
    ///
    /// - Throws: ``GGUFError/missingTensor(_:)``, ``ModelError/tensorShape(tensor:shape:expected:)``,
    ///   ``ModelError/tensorType(tensor:type:allowed:)``, ``ModelError/unexpectedTensor(tensor:shape:)``.
    public func validateTensors(of file: GGUFFile) throws {
        let table = expectedTensors()
        for spec in table {
            guard file.hasTensor(named: spec.name) else {
                if spec.required { throw GGUFError.missingTensor(spec.name) }
                continue
            }
            let t = try file.tensor(named: spec.name)
            guard t.shape == spec.shape else {
                throw ModelError.tensorShape(tensor: t.name, shape: t.shape, expected: spec.shape)
            }
            guard spec.types.contains(t.type) else {
                throw ModelError.tensorType(tensor: t.name, type: t.type, allowed: spec.types)
            }
        }
        let known = Set(table.map(\.name))
        if let extra = file.tensors.first(where: { !known.contains($0.name) }) {
            throw ModelError.unexpectedTensor(tensor: extra.name, shape: extra.shape)
        }
    }
}
