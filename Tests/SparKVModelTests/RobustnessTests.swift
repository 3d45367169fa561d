import Foundation
import SparKV
import Testing

@testable import SparKVModel

// Issue 11, items 5 and 6: a crafted file or argument gives a clear typed error, never an
// out-of-bounds read, a trap, a hang or an unbounded allocation.

@Suite("Model loader: every tensor checked against the architecture")
struct TensorTableTests {
    @Test func theTinyModelLoadsAndRuns() throws {
        let model = try TinyLlama().model()
        #expect(model.config.layers == 2 && model.config.hidden == 32 && model.config.vocabularySize == 32)
        #expect(model.config.contextLength == 16)
        let state = try model.prefill(tokens: [1, 2, 3])
        #expect(state.lastLogits.count == 32 && state.lastLogits.allSatisfy(\.isFinite))
        let session = try LlamaSession(model: model, policy: .dense, capacity: 8)
        try session.load(state)
        #expect(try session.step(token: 4).allSatisfy(\.isFinite))
        var untied = TinyLlama()
        untied.untiedOutput = true
        _ = try untied.model()
    }

    /// The defect: `output_norm` of [8] instead of [576] made `svm_rmsnorm` read 576 floats from an
    /// 8-float array (ASan heap-buffer-overflow); the norms and the embedding row length were not
    /// checked at all.
    @Test(arguments: [
        ("output_norm.weight", [UInt64(8)]), ("blk.0.attn_norm.weight", [8]), ("blk.1.ffn_norm.weight", [8]),
        ("output_norm.weight", [32, 2]), ("blk.0.attn_norm.weight", [64]),
        ("token_embd.weight", [16, 32]), ("token_embd.weight", [32]), ("token_embd.weight", [64, 16]),
        ("blk.0.attn_q.weight", [32, 16]), ("blk.1.attn_k.weight", [32, 32]), ("blk.0.attn_v.weight", [16, 16]),
        ("blk.1.attn_output.weight", [32, 16]), ("blk.0.ffn_gate.weight", [32, 32]),
        ("blk.0.ffn_up.weight", [32, 64, 1]), ("blk.1.ffn_down.weight", [32, 64]),
    ])
    func aTensorOfTheWrongShapeIsNamedWithBothShapes(tensor: String, shape: [UInt64]) throws {
        var tiny = TinyLlama()
        tiny.shapeOverride[tensor] = shape
        // The vocabulary is the embedding's row count, so only its row length is fixed.
        let expected = tensor == "token_embd.weight" ? [32, shape.dropFirst().reduce(1) { $0 * Int($1) }]
            : tiny.tensorShapes.first { $0.0 == tensor }?.1 ?? []
        let error = modelError { _ = try tiny.model() }
        #expect(error == .tensorShape(tensor: tensor, shape: shape.map(Int.init), expected: expected))
        #expect(error?.description == "weight \"\(tensor)\" has shape \(shape), expected \(expected)")
    }

    /// With tied embeddings the output matmul reads `token_embd`; an untied `output.weight` of
    /// the wrong width is caught the same way.
    @Test func anUntiedOutputOfTheWrongShapeIsRejected() throws {
        var tiny = TinyLlama()
        tiny.untiedOutput = true
        tiny.shapeOverride["output.weight"] = [32, 31]
        #expect(modelError { _ = try tiny.model() } == .tensorShape(tensor: "output.weight", shape: [32, 31], expected: [32, 32]))
    }

    @Test func typesTheKernelsCannotReadAreRejected() throws {
        var tiny = TinyLlama()
        tiny.typeOverride["blk.0.attn_norm.weight"] = .q8_0
        tiny.shapeOverride["blk.0.attn_norm.weight"] = [32]
        #expect(modelError { _ = try tiny.model() }
            == .tensorType(tensor: "blk.0.attn_norm.weight", type: .q8_0, allowed: LlamaConfig.normTypes))
        tiny = TinyLlama()
        tiny.typeOverride["blk.1.ffn_up.weight"] = .q4_0
        #expect(modelError { _ = try tiny.model() }
            == .tensorType(tensor: "blk.1.ffn_up.weight", type: .q4_0, allowed: LlamaConfig.matrixTypes))
    }

    @Test func missingAndUnexpectedTensorsAreReported() throws {
        var tiny = TinyLlama()
        tiny.omitted = ["blk.1.ffn_norm.weight"]
        #expect(ggufError { _ = try tiny.model() } == .missingTensor("blk.1.ffn_norm.weight"))
        tiny = TinyLlama()
        tiny.extra = [("blk.2.attn_q.weight", [32, 32])]
        #expect(modelError { _ = try tiny.model() } == .unexpectedTensor(tensor: "blk.2.attn_q.weight", shape: [32, 32]))
        tiny = TinyLlama()
        tiny.extra = [("rope_freqs.weight", [8])]
        #expect(modelError { _ = try tiny.model() } == .unexpectedTensor(tensor: "rope_freqs.weight", shape: [8]))
    }

    @Test func anotherArchitectureIsRejected() throws {
        var tiny = TinyLlama()
        tiny.architecture = "gpt2"
        #expect(modelError { _ = try tiny.model() } == .unsupportedArchitecture("gpt2"))
    }

    /// The defect: `llama.context_length` = 2^62 trapped on `contextLength * 4` (LlamaSession).
    @Test(arguments: [
        ("llama.context_length", GGUFValue.uint64(1 << 62)), ("llama.context_length", .int32(0)),
        ("llama.context_length", .int64(-5)), ("llama.block_count", .uint64(1 << 40)),
        ("llama.embedding_length", .uint64(1 << 40)), ("llama.attention.head_count", .uint32(0)),
        ("llama.attention.head_count_kv", .uint32(3)), ("llama.feed_forward_length", .int64(-1)),
        ("llama.rope.freq_base", .float32(.infinity)), ("llama.attention.layer_norm_rms_epsilon", .float32(-1)),
    ])
    func outOfRangeHyperparametersAreRejected(key: String, value: GGUFValue) throws {
        var tiny = TinyLlama()
        tiny.metadata = [(key, value)]
        guard case .invalidConfig(let name, _) = modelError({ _ = try tiny.model() }) else {
            Issue.record("\(key) = \(value) was accepted"); return
        }
        #expect(name == key)
    }

    @Test func aHeadLayoutThatDoesNotAddUpIsRejected() throws {
        var tiny = TinyLlama()
        tiny.metadata = [("llama.rope.dimension_count", .uint32(8))]
        guard case .invalidConfig(key: "head layout", _) = modelError({ _ = try tiny.model() }) else {
            Issue.record("head_dim 8 x 2 heads != hidden 32 was accepted"); return
        }
    }

    @Test func aDeclaredVocabularyMustMatchTheEmbedding() throws {
        var tiny = TinyLlama()
        tiny.metadata = [("llama.vocab_size", .uint32(33))]
        guard case .invalidConfig(key: "llama.vocab_size", _) = modelError({ _ = try tiny.model() }) else {
            Issue.record("vocab_size 33 with 32 embedding rows was accepted"); return
        }
    }
}

@Suite("Model path: sizes from arguments")
struct ModelLimitsTests {
    /// The defect: a prompt longer than the model's context ran without a word.
    @Test func aPromptLongerThanTheContextIsAnError() throws {
        let model = try TinyLlama().model()
        _ = try model.prefill(tokens: Array(repeating: 1, count: 16))
        #expect(modelError { _ = try model.prefill(tokens: Array(repeating: 1, count: 17)) }
            == .promptTooLong(tokens: 17, contextLength: 16))
        #expect(ModelError.promptTooLong(tokens: 17, contextLength: 16).description
            == "the prompt has 17 tokens, more than the model's context of 16 tokens")
    }

    @Test func sessionsAreBoundedByTheModelsPositions() throws {
        let model = try TinyLlama().model()
        #expect(model.config.maxPositions == 64)
        #expect(modelError { _ = try LlamaSession(model: model, policy: .dense, capacity: Int.max) }
            == .tooManyTokens(tokens: Int.max, limit: 65))
        #expect(modelError { _ = try LlamaSession(model: model, policy: .dense, capacity: 0) } != nil)
        let session = try LlamaSession(model: model, policy: .dense, capacity: 65)
        try session.load(try model.prefill(tokens: [1]))
        for t in 1..<64 { _ = try session.step(token: t % 32) }
        #expect(modelError { _ = try session.step(token: 0) } == .tooManyTokens(tokens: 65, limit: 64))
    }

    /// The defect: `--threads 3000000000` trapped in `Int32(...)` (LlamaModel.threads).
    @Test(arguments: [3_000_000_000, Int.max, Int.min, 1025, -1])
    func threadCountsOutOfRangeAreErrors(count: Int) {
        let before = LlamaModel.threads
        #expect(modelError { try LlamaModel.setThreads(count) } == .invalidThreads(count))
        #expect(LlamaModel.threads == before)
    }
}

@Suite("GGUF reader: hostile files")
struct GGUFHostileFileTests {
    /// The defect: `GGUFFile(path:)` on a FIFO blocked forever in open(2).
    @Test func aFIFOIsRefusedWithoutBlocking() throws {
        let path = NSTemporaryDirectory() + "sparkv-fifo-\(UUID().uuidString)"
        guard mkfifo(path, 0o600) == 0 else { Issue.record("mkfifo failed: errno \(errno)"); return }
        defer { unlink(path) }
        let error = ggufError { _ = try GGUFFile(path: path) }
        #expect(error == .unreadable(path: path, reason: "not a regular file (a FIFO)"))
        #expect(ggufError { _ = try LlamaModel(path: "/dev/zero") } == .unreadable(path: "/dev/zero", reason: "not a regular file (a character device)"))
    }

    /// The defect: messages quoted a key in full (a 179 MB key gave a 179 MB message), and every
    /// element of an array rebuilt a message string holding the key (150-440 s to open).
    @Test func longKeysAreCutInMessagesAndCostNothingPerElement() throws {
        let long = String(repeating: "k", count: 60_000)
        var b = GGUFBuilder()
        b.metadata = [(long, .uint8(1))]
        b.rawTypeOverride[long] = 13
        guard case .invalidFile(let detail) = ggufError({ _ = try b.open() }) else { Issue.record("unknown type"); return }
        #expect(detail.count < 200)
        #expect(detail.contains(String(repeating: "k", count: 64) + "…\""))

        // 1M empty strings under a 60 kB key: 8 MB of file; the old reader built 60 GB of messages.
        let bytes = oneKeyGGUF(key: long, type: .array,
                               payload: le(UInt32(8)) + le(UInt64(1_000_000)) + [UInt8](repeating: 0, count: 8_000_000))
        let clock = ContinuousClock(), start = clock.now
        let file = try GGUFFile(bytes: bytes)
        #expect(clock.now - start < .seconds(3))
        #expect(file.metadata[long]?.array?.count == 1_000_000)
        #expect(ggufError { _ = try file.int(long) }?.description.count ?? 0 < 200)

        #expect(GGUFError.missingTensor(long).description.count < 200)
        #expect(GGUFValue.string(long).description == "\"" + String(repeating: "k", count: 64) + "…\"")
        #expect(TokenizerError.unsupportedModel(long).description.count < 200)
        #expect(ModelError.tensorShape(tensor: long, shape: [1], expected: [2]).description.count < 200)
    }

    @Test func keysAndTensorNamesLongerThanTheSpecificationAllowsAreRejected() throws {
        var b = GGUFBuilder()
        b.metadata = [(String(repeating: "k", count: 65_536), .uint8(1))]
        guard case .invalidFile(let detail) = ggufError({ _ = try b.open() }) else { Issue.record("long key"); return }
        #expect(detail.contains("65536 bytes long"))
        b = GGUFBuilder()
        b.tensors = [.init(name: String(repeating: "t", count: 65), dims: [1], type: 0, data: [0, 0, 0, 0])]
        guard case .invalidFile = ggufError({ _ = try b.open() }) else { Issue.record("long tensor name"); return }
        b.tensors[0].name = String(repeating: "t", count: 64)
        _ = try b.open()
    }

    /// The defect: every array element became a boxed GGUFValue (a 90 MB array cost 2.3 GB).
    /// Arrays from a file now keep their bytes where they are (fixed-size elements) or one
    /// offset per element (strings, nested arrays).
    @Test func metadataArraysAreNotMaterialised() throws {
        var b = GGUFBuilder.sample()
        b.metadata.append(("t.bytes", .array(elementType: .uint8, elements: (0..<4096).map { .uint8(UInt8($0 % 256)) })))
        let file = try b.open()
        guard case .array(let bytes) = file.metadata["t.bytes"], case .fixed = bytes.storage else {
            Issue.record("a uint8 array was materialised"); return
        }
        #expect(bytes.count == 4096 && bytes[300] == .uint8(44))
        guard case .array(let strings) = file.metadata["t.strings"], case .variable(_, let offsets, _, _) = strings.storage else {
            Issue.record("a string array was materialised"); return
        }
        #expect(offsets.count == 4 && strings.map(\.string) == ["a", "", "<|im_end|>"])
        guard case .array(let nested) = file.metadata["t.nested"], case .variable = nested.storage else {
            Issue.record("a nested array was materialised"); return
        }
        #expect(nested[0] == .array(elementType: .string, elements: [.string("x"), .string("y")]))
        #expect(file.metadata["t.ints"] == .array(elementType: .int32, elements: [.int32(1), .int32(-2), .int32(3)]))
        #expect(file.metadata["t.ints"]?.hashValue == GGUFValue.array(elementType: .int32, elements: [.int32(1), .int32(-2), .int32(3)]).hashValue)

        // Nested arrays render by type and count: 7 levels of 4 stay one short line.
        var deep = GGUFValue.array(elementType: .uint8, elements: [.uint8(1)])
        for _ in 0..<7 { deep = .array(elementType: .array, elements: Array(repeating: deep, count: 4)) }
        #expect(deep.description == "[array x 4] [[array x 4], [array x 4], [array x 4], [array x 4]]")

        // A 64 MB array opens at the cost of its count, not of 64M boxed values.
        let raw = oneKeyGGUF(key: "big", type: .array,
                             payload: le(UInt32(0)) + le(UInt64(64 << 20)) + [UInt8](repeating: 7, count: 64 << 20))
        let clock = ContinuousClock(), start = clock.now
        let file2 = try GGUFFile(bytes: raw)
        #expect(clock.now - start < .seconds(2))
        #expect(file2.metadata["big"]?.array?.count == 64 << 20)
        #expect(file2.metadata["big"]?.array?.last == .uint8(7))
    }

    /// Found while writing the fuzz target: a tensor with a zero dimension holds no bytes yet may
    /// claim a huge row length, and `dequantizeRow` allocated the row (4 TiB) before checking the
    /// row index.
    @Test func anEmptyTensorWithAHugeRowAllocatesNothing() throws {
        var b = GGUFBuilder()
        b.tensors = [.init(name: "empty", dims: [1 << 40, 0], type: 0, data: [])]
        let t = try b.open().tensor(named: "empty")
        #expect(t.rowCount == 0 && t.byteCount == 0 && t.rowLength == 1 << 40)
        #expect(ggufError { _ = try t.dequantizeRow(0) } == .tensorOutOfRange(tensor: "empty", detail: "row 0 is not in 0..<0"))
    }

    /// The fuzz target's regression inputs (Tests/Fuzz/GGUF/corpus/regress-*, written by
    /// make_seeds.py) each give their typed error here too, and the seeds load.
    @Test func theFuzzCorpusGivesTypedErrors() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Fuzz/GGUF/corpus").standardizedFileURL.path
        func load(_ name: String) throws -> LlamaModel { try LlamaModel(path: corpus + "/" + name) }
        #expect(modelError { _ = try load("regress-output-norm-8.bin") }
            == .tensorShape(tensor: "output_norm.weight", shape: [8], expected: [32]))
        #expect(modelError { _ = try load("regress-attn-norm-4.bin") }
            == .tensorShape(tensor: "blk.1.attn_norm.weight", shape: [4], expected: [32]))
        #expect(modelError { _ = try load("regress-embd-row-16.bin") }
            == .tensorShape(tensor: "token_embd.weight", shape: [16, 104], expected: [32, 104]))
        guard case .invalidConfig("llama.context_length", _) = modelError({ _ = try load("regress-context-2e62.bin") }) else {
            Issue.record("context_length 2^62 accepted"); return
        }
        let longKey = try GGUFFile(path: corpus + "/regress-long-key-array.bin")
        #expect(longKey.metadata.first?.value.array?.count == 512)
        #expect(ggufError { _ = try load("regress-long-key-array.bin") } == .missingKey("general.architecture"))
        let empty = try GGUFFile(path: corpus + "/regress-zero-dim-row.bin").tensor(named: "empty")
        #expect(ggufError { _ = try empty.dequantizeRow(0) } != nil)
        for seed in ["seed-tiny-llama-f32.bin", "seed-tiny-llama-quant.bin"] {
            let model = try load(seed)
            _ = try Tokenizer(gguf: model.file)
            #expect(try model.prefill(tokens: [1, 5, 9]).lastLogits.allSatisfy(\.isFinite), "\(seed)")
        }
    }

    @Test func boolArraysAreCheckedWhenOpened() throws {
        var bytes = oneKeyGGUF(key: "flags", type: .array, payload: le(UInt32(7)) + le(UInt64(2)) + [1, 0])
        #expect(try GGUFFile(bytes: bytes).metadata["flags"] == .array(elementType: .bool, elements: [.bool(true), .bool(false)]))
        bytes[bytes.count - 1] = 2   // the second bool
        guard case .invalidFile = ggufError({ _ = try GGUFFile(bytes: bytes) }) else { Issue.record("bool 2 accepted"); return }
    }
}

@Suite("Model files: SPARKV_MODEL")
struct ModelFilesTests {
    /// The defect: `SPARKV_MODEL=/nonexistent` was silently passed over for models/.
    @Test func anEnvironmentPathThatNamesNothingIsAnError() throws {
        #expect(ModelFiles.find(environmentValue: "/nonexistent") == nil)
        let error = modelError { _ = try ModelFiles.locate(environmentValue: "/nonexistent") }
        #expect(error == .environmentPath(variable: "SPARKV_MODEL", value: "/nonexistent", reason: "No such file or directory"))
        #expect(error?.description.hasPrefix("SPARKV_MODEL=/nonexistent names no model file") == true)

        let dir = NSTemporaryDirectory() + "sparkv-models-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard case .environmentPath(_, dir, _) = modelError({ _ = try ModelFiles.locate(environmentValue: dir) }) else {
            Issue.record("a directory without the model was accepted"); return
        }
        let file = dir + "/" + ModelFiles.smolLM2FileName
        FileManager.default.createFile(atPath: file, contents: Data())
        guard case .environmentPath(_, _, let reason) = modelError({ _ = try ModelFiles.locate(environmentValue: dir) }) else {
            Issue.record("an empty model file was accepted"); return
        }
        #expect(reason.hasSuffix("the file is empty"))
        FileManager.default.createFile(atPath: file, contents: Data([1]))
        #expect(try ModelFiles.locate(environmentValue: dir) == file)
        #expect(try ModelFiles.locate(environmentValue: file) == file)
    }
}

/// A GGUF file of one metadata key (no tensors): the header, the key, its type code, then
/// `payload` as the value's bytes.
func oneKeyGGUF(key: String, type: GGUFValueType, payload: [UInt8]) -> [UInt8] {
    Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(1)) + le(UInt64(key.utf8.count)) + Array(key.utf8)
        + le(type.rawValue) + payload
}

/// Little-endian bytes of an integer.
func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
