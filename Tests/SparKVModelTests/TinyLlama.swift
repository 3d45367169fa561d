import Foundation
import Testing

@testable import SparKVModel

/// A tiny, valid Llama (or, with ``architecture``, Qwen2 or Gemma 3) GGUF built in memory (F32 weights, a 32-token byte-level vocabulary), with
/// knobs to make it wrong in one place: the tests of the loader's checks start from it.
///
/// hidden 32, 2 query heads and 1 KV head of 16 channels, feed-forward 64, 2 layers, context 16.
struct TinyLlama {
    var hidden = 32
    var heads = 2
    var kvHeads = 1
    var feedForward = 64
    var layers = 2
    var vocabulary = 32
    var contextLength: GGUFValue? = .uint32(16)
    /// `general.architecture`, also the prefix of the hyper-parameter keys. "qwen2" adds the Q/K/V
    /// biases; "gemma3" the QK-norms, the post-norms and `gemma3.attention.sliding_window` (8).
    var architecture = "llama"
    /// Shapes to use instead of the right ones, by tensor name (GGUF order).
    var shapeOverride: [String: [UInt64]] = [:]
    /// Types to use instead of F32, by tensor name (the data is sized for the type).
    var typeOverride: [String: GGUFTensorType] = [:]
    /// Tensors to leave out.
    var omitted: Set<String> = []
    /// Extra tensors (F32 of the given shape).
    var extra: [(String, [UInt64])] = []
    /// Metadata to add or replace.
    var metadata: [(String, GGUFValue)] = []
    /// Whether to write `output.weight` (else the embeddings are tied).
    var untiedOutput = false

    var headDim: Int { hidden / heads }

    /// Every tensor: name and shape (GGUF order: row length first).
    var tensorShapes: [(String, [Int])] {
        let q = heads * headDim, kv = kvHeads * headDim
        var out: [(String, [Int])] = [("token_embd.weight", [hidden, vocabulary]), ("output_norm.weight", [hidden])]
        if untiedOutput { out.append(("output.weight", [hidden, vocabulary])) }
        for l in 0..<layers {
            out += [("blk.\(l).attn_norm.weight", [hidden]), ("blk.\(l).attn_q.weight", [hidden, q]),
                    ("blk.\(l).attn_k.weight", [hidden, kv]), ("blk.\(l).attn_v.weight", [hidden, kv]),
                    ("blk.\(l).attn_output.weight", [q, hidden]), ("blk.\(l).ffn_norm.weight", [hidden]),
                    ("blk.\(l).ffn_gate.weight", [hidden, feedForward]), ("blk.\(l).ffn_up.weight", [hidden, feedForward]),
                    ("blk.\(l).ffn_down.weight", [feedForward, hidden])]
            if architecture == "qwen2" {
                out += [("blk.\(l).attn_q.bias", [q]), ("blk.\(l).attn_k.bias", [kv]), ("blk.\(l).attn_v.bias", [kv])]
            }
            if architecture == "gemma3" {
                out += [("blk.\(l).attn_q_norm.weight", [headDim]), ("blk.\(l).attn_k_norm.weight", [headDim]),
                        ("blk.\(l).post_attention_norm.weight", [hidden]), ("blk.\(l).post_ffw_norm.weight", [hidden])]
            }
        }
        return out
    }

    func builder() -> GGUFBuilder {
        var b = GGUFBuilder()
        let a = architecture
        var meta: [(String, GGUFValue)] = [
            ("general.architecture", .string(a)),
            ("\(a).block_count", .uint32(UInt32(layers))),
            ("\(a).embedding_length", .uint32(UInt32(hidden))),
            ("\(a).feed_forward_length", .uint32(UInt32(feedForward))),
            ("\(a).attention.head_count", .uint32(UInt32(heads))),
            ("\(a).attention.head_count_kv", .uint32(UInt32(kvHeads))),
            ("\(a).rope.freq_base", .float32(10000)),
            ("\(a).attention.layer_norm_rms_epsilon", .float32(1e-5)),
        ]
        if a == "gemma3" { meta.append(("gemma3.attention.sliding_window", .uint32(8))) }
        if let contextLength { meta.append(("\(a).context_length", contextLength)) }
        for (key, value) in metadata {
            if let i = meta.firstIndex(where: { $0.0 == key }) { meta[i].1 = value } else { meta.append((key, value)) }
        }
        b.metadata = meta
        var random = TestRandom(state: 0x711e)
        for (name, shape) in tensorShapes + extra.map({ ($0.0, $0.1.map(Int.init)) }) where !omitted.contains(name) {
            let dims = shapeOverride[name] ?? shape.map(UInt64.init)
            let type = typeOverride[name] ?? .f32
            let count = dims.reduce(1) { $0 * Int($1) }
            let data: [UInt8]
            if type == .f32 {
                // Norm weights near 1, the rest small: the forward pass stays finite.
                let isNorm = name.hasSuffix("norm.weight")
                data = (0..<count).flatMap { _ -> [UInt8] in
                    let u = Float(random.next() >> 40) / Float(1 << 24) - 0.5
                    let v: Float = isNorm ? 1 + 0.1 * u : 0.2 * u
                    return withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) }
                }
            } else {
                data = [UInt8](repeating: 0, count: type.byteCount(values: count) ?? 0)
            }
            b.tensors.append(.init(name: name, dims: dims, type: type.rawValue, data: data))
        }
        return b
    }

    func bytes() -> [UInt8] { builder().build().bytes }

    func open() throws -> GGUFFile { try GGUFFile(bytes: bytes()) }

    func model() throws -> LlamaModel { try LlamaModel(file: try open()) }
}

/// The ModelError `body` throws (see ``thrownError(_:_:sourceLocation:)`` in GGUFTests.swift).
func modelError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> ModelError? {
    thrownError(ModelError.self, body, sourceLocation: sourceLocation)
}
