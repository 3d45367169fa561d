import Foundation
import Testing

@testable import SparKVModel

// Issue 13: architectures as data, read from each model's GGUF metadata; an architecture or a
// tokenizer this library cannot run is a typed error naming it, never a silent run as Llama.

@Suite("Architectures: read from each model's metadata")
struct ArchitectureMetadataTests {
    @Test func smolLM2IsLlamaWithAdjacentPairRoPE() throws {
        let file = try SmolLM2Fixture.requireFile()
        let arch = try ModelArchitecture(gguf: file)
        #expect(arch.name == "llama" && arch.ropeStyle == .adjacentPairs && arch.activation == .silu)
        #expect(!arch.hasQKVBias && !arch.hasQKNorm && !arch.hasPostNorms && !arch.scalesEmbedding)
        #expect(arch.globalRoPEBase == 100_000 && arch.slidingWindow == nil && arch.tiedOutput)
        #expect(arch.ropeBase(layer: 29) == 100_000 && !arch.isSlidingWindow(layer: 0))
    }

    /// The numbers of the issue: 28 layers, 12 query heads, 2 KV heads, head_dim 128, Q/K/V biases,
    /// NEOX RoPE base 1e6, 151,936 tokens.
    @Test func qwen2HasBiasesAndHalfSplitRoPEWithBaseOneMillion() throws {
        let file = try KnownModelFixture.requireFile(.qwen25Coder1_5B)
        let config = try LlamaConfig(metadataOf: file)
        let arch = config.architecture
        #expect(arch.name == "qwen2" && arch.ropeStyle == .halfSplit && arch.activation == .silu)
        #expect(arch.hasQKVBias && !arch.hasQKNorm && !arch.hasPostNorms && !arch.scalesEmbedding)
        #expect(arch.globalRoPEBase == 1_000_000 && arch.slidingWindow == nil && !arch.tiedOutput)
        #expect((0..<28).allSatisfy { arch.ropeBase(layer: $0) == 1_000_000 && !arch.isSlidingWindow(layer: $0) })
        #expect(config.layers == 28 && config.queryHeads == 12 && config.kvHeads == 2 && config.headDim == 128)
        #expect(config.hidden == 1536 && config.feedForward == 8960 && config.vocabularySize == 151_936)
        #expect(config.contextLength == 32768 && config.ropeBase == 1_000_000 && config.rmsEpsilon == 1e-6)
        // The table has the biases, and the file has exactly the table's tensors (types aside).
        let table = config.expectedTensors()
        #expect(table.contains { $0.name == "blk.27.attn_k.bias" && $0.shape == [256] })
        let required = Set(table.filter(\.required).map(\.name)), known = Set(table.map(\.name))
        let names = Set(file.tensors.map(\.name))
        #expect(required.subtracting(names).isEmpty && names.subtracting(known).isEmpty)
        for spec in table where file.hasTensor(named: spec.name) {
            #expect(try file.tensor(named: spec.name).shape == spec.shape, "\(spec.name)")
        }
    }

    /// Gemma 3 270M: 18 layers, 4 query heads, 1 KV head, head_dim 256 (not hidden / heads), QK-norm,
    /// post-norms, GELU, scaled embeddings, tied output; a 512-token window on 5 of every 6 layers
    /// with RoPE base 1e4 there and 1e6 on the global layers.
    @Test func gemma3SlidesFiveLayersOfSixWithTheirOwnRoPEBase() throws {
        let file = try KnownModelFixture.requireFile(.gemma3_270M)
        let config = try LlamaConfig(metadataOf: file)
        let arch = config.architecture
        #expect(arch.name == "gemma3" && arch.ropeStyle == .halfSplit && arch.activation == .geluTanh)
        #expect(!arch.hasQKVBias && arch.hasQKNorm && arch.hasPostNorms && arch.scalesEmbedding && arch.tiedOutput)
        #expect(arch.slidingWindow == 512 && arch.slidingWindowPattern == 6)
        let global = (0..<18).filter { !arch.isSlidingWindow(layer: $0) }
        #expect(global == [5, 11, 17])
        #expect(global.allSatisfy { arch.ropeBase(layer: $0) == 1_000_000 })
        #expect((0..<18).filter(arch.isSlidingWindow).allSatisfy { arch.ropeBase(layer: $0) == 10_000 })
        #expect(config.layers == 18 && config.queryHeads == 4 && config.kvHeads == 1 && config.headDim == 256)
        #expect(config.hidden == 640 && config.feedForward == 2048 && config.vocabularySize == 262_144)
        let table = config.expectedTensors()
        let required = Set(table.filter(\.required).map(\.name)), known = Set(table.map(\.name))
        let names = Set(file.tensors.map(\.name))
        #expect(required.subtracting(names).isEmpty && names.subtracting(known).isEmpty)
        for spec in table where file.hasTensor(named: spec.name) {
            #expect(try file.tensor(named: spec.name).shape == spec.shape, "\(spec.name)")
        }
    }
}

@Suite("Architectures: what is not supported is named")
struct UnsupportedArchitectureTests {
    @Test(arguments: ["phi3", "gemma2", "qwen3", "mistral", ""])
    func anUnknownArchitectureIsATypedErrorNamingIt(name: String) throws {
        var tiny = TinyLlama()
        tiny.architecture = name
        let error = modelError { _ = try tiny.model() }
        #expect(error == .unsupportedArchitecture(name))
        #expect(error?.description == "unsupported model architecture \"\(name)\" (supported: llama, qwen2, gemma3)")
    }

    @Test func gemma3WithoutItsSlidingWindowIsAMissingKey() throws {
        var tiny = TinyLlama()
        tiny.architecture = "gemma3"
        // Drop the window the tiny Gemma carries: an unknown value would be a silent wrong run.
        var builder = tiny.builder()
        builder.metadata.removeAll { $0.0 == "gemma3.attention.sliding_window" }
        let bytes = builder.build().bytes
        let error = thrownError(GGUFError.self) { _ = try LlamaModel(file: try GGUFFile(bytes: bytes)) }
        #expect(error == .missingKey("gemma3.attention.sliding_window"))
    }

    /// A hyper-parameter the family needs is looked up under its own prefix, and its absence named.
    @Test(arguments: ["qwen2", "gemma3"])
    func aMissingHyperparameterIsNamed(architecture: String) throws {
        var tiny = TinyLlama()
        tiny.architecture = architecture
        var builder = tiny.builder()
        builder.metadata.removeAll { $0.0 == "\(architecture).block_count" }
        let error = thrownError(GGUFError.self) { _ = try LlamaModel(file: try GGUFFile(bytes: builder.build().bytes)) }
        #expect(error == .missingKey("\(architecture).block_count"))
    }

    /// A SentencePiece vocabulary without its scores cannot merge: a missing key, not a guess.
    @Test func sentencePieceWithoutScoresIsAMissingKey() throws {
        var builder = GGUFBuilder()
        builder.metadata = [("tokenizer.ggml.model", .string("llama")),
                            ("tokenizer.ggml.tokens", .array(GGUFArray(elementType: .string, elements: [.string("a")])))]
        let file = try GGUFFile(bytes: builder.build().bytes)
        #expect(thrownError(GGUFError.self) { _ = try Tokenizer(gguf: file) } == .missingKey("tokenizer.ggml.scores"))
    }

    @Test func aScaledRoPEIsRefused() throws {
        var tiny = TinyLlama()
        tiny.architecture = "qwen2"
        tiny.metadata = [("qwen2.rope.scaling.type", .string("yarn"))]
        guard case .invalidConfig(key: "qwen2.rope.scaling.type", _) = modelError({ _ = try tiny.model() }) else {
            Issue.record("a YaRN-scaled RoPE was accepted"); return
        }
    }

    /// A Qwen2 file without its biases would run as a bias-free model.
    @Test func qwen2WithoutItsBiasesIsAMissingTensor() throws {
        var tiny = TinyLlama()
        tiny.architecture = "qwen2"
        tiny.omitted = ["blk.1.attn_v.bias"]
        #expect(thrownError(GGUFError.self) { _ = try tiny.model() } == .missingTensor("blk.1.attn_v.bias"))
    }

    @Test(arguments: ["t5", "bert", "rwkv", "ugm"])
    func anUnknownTokenizerModelIsATypedError(name: String) throws {
        var builder = GGUFBuilder()
        builder.metadata = [("tokenizer.ggml.model", .string(name)),
                            ("tokenizer.ggml.tokens", .array(GGUFArray(elementType: .string, elements: [.string("a")])))]
        let file = try GGUFFile(bytes: builder.build().bytes)
        let error = thrownError(TokenizerError.self) { _ = try Tokenizer(gguf: file) }
        #expect(error == .unsupportedModel(name))
        #expect(error?.description.contains("\"\(name)\"") == true)
    }

    @Test(arguments: ["llama-bpe", "deepseek-coder", "default", "qwen"])
    func anUnknownPreTokenizerIsATypedError(name: String) throws {
        let alphabet = (0..<256).map { String(Unicode.Scalar(ByteLevel.scalarForByte[$0])!) }
        let error = thrownError(TokenizerError.self) {
            _ = try Tokenizer(tokens: alphabet, tokenTypes: nil, merges: [], preTokenizer: name)
        }
        #expect(error == .unsupportedPreTokenizer(name))
    }
}

@Suite("Architectures: one forward pass reads the description")
struct ArchitectureForwardTests {
    /// Half-split RoPE is adjacent-pair RoPE on the channels reordered (0, d/2, 1, d/2+1, ...).
    @Test func halfSplitRoPEIsAdjacentPairsOnInterleavedChannels() throws {
        let n = 3, heads = 2, d = 8
        var random = TestRandom(state: 42)
        let x = (0..<n * heads * d).map { _ in Float(random.below(2000)) / 1000 - 1 }
        let positions: [Int32] = [0, 7, 1000]
        var neox = x
        try neox.withUnsafeMutableBufferPointer { p in
            try ModelArchitecture.RoPEStyle.halfSplit.rotate(p.baseAddress!, tokens: n, heads: heads, headDim: d,
                                                             positions: positions, base: 10_000)
        }
        // interleaved[2i] = x[i], interleaved[2i+1] = x[i + d/2]
        let order = (0..<d).map { $0 % 2 == 0 ? $0 / 2 : d / 2 + $0 / 2 }
        var adjacent = (0..<n * heads).flatMap { row in order.map { x[row * d + $0] } }
        try adjacent.withUnsafeMutableBufferPointer { p in
            try ModelArchitecture.RoPEStyle.adjacentPairs.rotate(p.baseAddress!, tokens: n, heads: heads, headDim: d,
                                                                 positions: positions, base: 10_000)
        }
        for row in 0..<n * heads {
            for (j, channel) in order.enumerated() {
                #expect(abs(adjacent[row * d + j] - neox[row * d + channel]) < 1e-5)
            }
        }
        #expect(neox[0..<d] == x[0..<d])   // position 0 is not rotated
    }

    @Test func geluTanhGatesLikeTheFormula() {
        var gate: [Float] = [-3, -0.5, 0, 0.5, 3]
        let up: [Float] = [1, 2, 3, -1, 0.5]
        func gelu(_ x: Double) -> Double {
            let inner: Double = 0.7978845608028654 * (x + 0.044715 * x * x * x)
            return 0.5 * x * (1 + Foundation.tanh(inner))
        }
        var expected: [Float] = []
        for (x, u) in zip(gate, up) { expected.append(Float(gelu(Double(x)) * Double(u))) }
        gate.withUnsafeMutableBufferPointer { g in
            ModelArchitecture.Activation.geluTanh.gate(g.baseAddress!, up, count: 5)
        }
        for (a, b) in zip(gate, expected) { #expect(abs(a - b) < 1e-6) }
    }

    /// Decoding a token through the cache gives the logits a prefill of the whole sequence gives:
    /// biases, QK-norm, RoPE style and base, post-norms, activation and embedding scale are applied
    /// the same way on both paths.
    @Test(arguments: ["llama", "qwen2", "gemma3"])
    func decodeAgreesWithPrefill(architecture: String) throws {
        var tiny = TinyLlama()
        tiny.architecture = architecture
        if architecture == "gemma3" { tiny.layers = 6 }   // one global layer for the SparKV cache
        let model = try tiny.model()
        model.exactMatmul = true
        #expect(model.config.architecture.name == architecture)
        let tokens = [3, 1, 4, 1, 5]
        let full = try model.prefill(tokens: tokens)
        let session = try LlamaSession(model: model, policy: .dense, capacity: 8)
        try session.load(try model.prefill(tokens: Array(tokens.dropLast())))
        let stepped = try session.step(token: tokens.last!)
        let reference = Array(full.lastLogits)
        #expect(stepped.count == reference.count)
        let worst = zip(stepped, reference).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst < 1e-3, "largest logit difference \(worst)")
    }

    /// The same weights with Qwen2's biases and with zero biases give other logits: the biases
    /// are used.
    @Test func qwen2BiasesChangeTheLogits() throws {
        var tiny = TinyLlama()
        tiny.architecture = "qwen2"
        var builder = tiny.builder()
        let withBias = try LlamaModel(file: try GGUFFile(bytes: builder.build().bytes)).prefill(tokens: [1, 2, 3]).lastLogits
        for i in builder.tensors.indices where builder.tensors[i].name.hasSuffix(".bias") {
            builder.tensors[i].data = [UInt8](repeating: 0, count: builder.tensors[i].data.count)
        }
        let zeroBias = try LlamaModel(file: try GGUFFile(bytes: builder.build().bytes)).prefill(tokens: [1, 2, 3]).lastLogits
        #expect(zip(withBias, zeroBias).contains { abs($0 - $1) > 1e-4 })
    }

    /// Past its window a sliding layer attends to the last `window` positions only, in the
    /// prefill and in decoding alike; the session holds no more than the window for it.
    @Test func slidingLayersSeeOnlyTheirWindow() throws {
        var tiny = TinyLlama()
        tiny.architecture = "gemma3"   // window 8, context 16; layers 0-4 slide, layer 5 is global
        tiny.layers = 6
        let model = try tiny.model()
        model.exactMatmul = true
        #expect(model.config.cachedLayers == [5])
        let tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
        let full = try model.prefill(tokens: tokens)
        let session = try LlamaSession(model: model, policy: .dense, capacity: 16)
        try session.load(try model.prefill(tokens: Array(tokens.dropLast())))
        let stepped = try session.step(token: tokens.last!)
        let worst = zip(stepped, full.lastLogits).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst < 1e-3, "largest logit difference \(worst)")
        #expect(session.slidingWindowBytes == 5 * 2 * 8 * 16 * 4)
        // A window as long as the prompt is full attention: other logits.
        tiny.metadata = [("gemma3.attention.sliding_window", .uint32(16))]
        let unwindowed = try tiny.model().prefill(tokens: tokens).lastLogits
        #expect(zip(unwindowed, full.lastLogits).contains { abs($0 - $1) > 1e-4 })
    }

    /// The windowed prefill attention against a float64 reference written out loop by loop.
    @Test func slidingWindowAttentionMatchesANaiveReference() throws {
        let n = 11, queryHeads = 4, kvHeads = 2, d = 8, window = 4
        let scale = 1 / Float(d).squareRoot()
        var random = TestRandom(state: 7)
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float(random.below(2001)) / 1000 - 1 } }
        let q = values(n * queryHeads * d), k = values(n * kvHeads * d), v = values(n * kvHeads * d)
        var out = [Float](repeating: 0, count: n * queryHeads * d)
        try slidingWindowAttention(q: q, k: k, v: v, tokens: n, queryHeads: queryHeads, kvHeads: kvHeads, headDim: d,
                                   window: window, scale: scale, out: &out)
        for t in 0..<n {
            for h in 0..<queryHeads {
                let g = h / (queryHeads / kvHeads)
                let seen = Array(max(0, t - window + 1)...t)
                let scores = seen.map { j in
                    (0..<d).reduce(0.0) { $0 + Double(q[(t * queryHeads + h) * d + $1]) * Double(k[(j * kvHeads + g) * d + $1]) }
                        * Double(scale)
                }
                let top = scores.max()!
                let weights = scores.map { Foundation.exp($0 - top) }
                let total = weights.reduce(0, +)
                for c in 0..<d {
                    let expected = zip(seen, weights).reduce(0.0) { $0 + $1.1 * Double(v[($1.0 * kvHeads + g) * d + c]) } / total
                    #expect(abs(Double(out[(t * queryHeads + h) * d + c]) - expected) < 1e-5)
                }
            }
        }
    }
}
