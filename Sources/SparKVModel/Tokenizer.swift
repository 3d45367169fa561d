/// A failure building a ``Tokenizer`` or decoding with it.
public enum TokenizerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `tokenizer.ggml.model` is neither "gpt2" (byte-level BPE) nor "llama" (SentencePiece).
    case unsupportedModel(String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer this implementation does not have.
    case unsupportedPreTokenizer(String)
    /// The vocabulary is unusable: empty, token types of the wrong length, no byte of the
    /// byte-level alphabet in it, or a special token id out of range.
    case invalidVocabulary(String)
    /// A token id passed to decode is not in `0..<vocabularySize`.
    case invalidTokenID(Int, vocabularySize: Int)

    public var description: String {
        switch self {
        case .unsupportedModel(let model):
            return "unsupported tokenizer model \(quoted(model)) (implemented: \"gpt2\" byte-level BPE, \"llama\" SentencePiece)"
        case .unsupportedPreTokenizer(let name):
            return "unsupported pre-tokenizer \(quoted(name)) (implemented: smollm and its family, gpt2, qwen2)"
        case .invalidVocabulary(let detail):
            return "invalid tokenizer vocabulary: \(detail)"
        case .invalidTokenID(let id, let size):
            return "token id \(id) is not in 0..<\(size)"
        }
    }
}

/// The kind of a vocabulary entry (`tokenizer.ggml.token_type`, llama.cpp's numbering).
public enum GGUFTokenType: Int32, Sendable, Hashable {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// The byte-level BPE tokenizer of a GGUF model (`tokenizer.ggml.model == "gpt2"`), as used by
/// SmolLM2.
///
/// Encoding: special tokens (control and user-defined entries such as `<|im_start|>`) are cut out
/// of the text first; each stretch between them is split into words by the model's pre-tokenizer
/// (for SmolLM2: every digit alone, then the GPT-2 regex), each word's UTF-8 bytes are written in
/// GPT-2's byte alphabet and merged by BPE, lowest merge rank first. Decoding maps tokens back to
/// bytes, so text round-trips exactly: `decode(encode(s)) == s`, byte for byte, for any text
/// without the few control characters the vocabulary cannot represent (``unencodableBytes``).
///
/// A plain immutable value, safe to share between threads.
///
/// ```swift
/// let file = try GGUFFile(path: try ModelFiles.locate())
/// let tokenizer = try Tokenizer(gguf: file)
/// let ids = tokenizer.encode("Hello world")           // [19556, 905]
/// let text = try tokenizer.decode(ids)                // "Hello world"
/// let prompt = tokenizer.chatPrompt([.user("What is 2+2?")])
/// let promptIDs = tokenizer.encode(prompt)            // starts with <|im_start|> = 1
/// ```
public struct Tokenizer: Sendable {
    /// Every vocabulary entry, as stored (in GPT-2's byte alphabet for normal tokens).
    public let tokens: [String]
    /// The kind of each entry.
    public let tokenTypes: [GGUFTokenType]
    /// Beginning-of-sequence token (`tokenizer.ggml.bos_token_id`), SmolLM2: 1 `<|im_start|>`.
    public let bosID: Int?
    /// End-of-sequence token (`tokenizer.ggml.eos_token_id`), SmolLM2: 2 `<|im_end|>`.
    public let eosID: Int?
    /// Unknown token (`tokenizer.ggml.unknown_token_id`), SmolLM2: 0 `<|endoftext|>`.
    public let unknownID: Int?
    /// Padding token (`tokenizer.ggml.padding_token_id`), SmolLM2: 2.
    public let paddingID: Int?
    /// Whether ``encode(_:addSpecial:parseSpecial:)`` with `addSpecial` prepends ``bosID``
    /// (`tokenizer.ggml.add_bos_token`; false for SmolLM2).
    public let addBOS: Bool
    /// Whether `addSpecial` appends ``eosID`` (`tokenizer.ggml.add_eos_token`; false when absent).
    public let addEOS: Bool
    /// The pre-tokenizer name (`tokenizer.ggml.pre`), "smollm" for SmolLM2.
    public let preTokenizerName: String
    /// The Jinja chat template (`tokenizer.chat_template`), if the file has one.
    public let chatTemplate: String?
    /// The system prompt the chat template inserts when a conversation does not start with one
    /// (read from the template; SmolLM2: "You are a helpful AI assistant named SmolLM, trained by
    /// Hugging Face"), nil if the template inserts none.
    public let defaultSystemPrompt: String?

    let vocabulary: [String: Int32]
    /// The SentencePiece model (`tokenizer.ggml.model` = "llama"); nil for byte-level BPE.
    let sentencePiece: SentencePieceModel?
    let merges: BPEMerges
    let preTokenizer: PreTokenizer
    /// The token of each byte's alphabet scalar.
    let byteTokens: [Int32]
    /// The bytes each token decodes to.
    let tokenByteTable: [[UInt8]]
    /// Special tokens by first byte, longest first: (bytes, id).
    let specialByFirstByte: [[([UInt8], Int32)]]

    /// Bytes whose byte-alphabet symbol is not in the vocabulary, so that no token can stand for
    /// them; encoding drops them, as the reference tokenizers (Hugging Face, llama.cpp) do. For
    /// SmolLM2 these are 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D (control characters), 0xF1 and 0xF2
    /// (lead bytes of the unassigned planes U+40000...U+BFFFF) and bytes that never occur in UTF-8
    /// (0xC0, 0xC1, 0xF5...0xFF): any text without those characters round-trips exactly.
    public let unencodableBytes: [UInt8]

    /// The turn markers of the model's chat template, from its vocabulary: ``ChatFormat/gemma``
    /// with `<start_of_turn>`/`<end_of_turn>`, ``ChatFormat/chatML`` with
    /// `<|im_start|>`/`<|im_end|>`, nil when it has neither (a base model without chat turns).
    public var chatFormat: ChatFormat? {
        if tokenID("<start_of_turn>") != nil && tokenID("<end_of_turn>") != nil { return .gemma }
        if tokenID("<|im_start|>") != nil && tokenID("<|im_end|>") != nil { return .chatML }
        return nil
    }

    /// Number of vocabulary entries (49152 for SmolLM2).
    public var vocabularySize: Int { tokens.count }

    /// Number of usable merges.
    public var mergeCount: Int { merges.count }

    /// Reads the tokenizer stored in a GGUF file's metadata: `tokenizer.ggml.model` ("gpt2":
    /// byte-level BPE with `.pre` and `.merges`; "llama": SentencePiece with `.scores`), `.tokens`,
    /// `.token_type`, the special token ids and flags, and `tokenizer.chat_template`.
    ///
    /// - Throws: ``GGUFError/missingKey(_:)`` or ``GGUFError/metadataType(key:expected:found:)``
    ///   for missing or mistyped metadata, ``TokenizerError`` for an unsupported or unusable
    ///   vocabulary.
    public init(gguf file: GGUFFile) throws {
        let model = try file.string("tokenizer.ggml.model")
        guard model == "gpt2" || model == "llama" else { throw TokenizerError.unsupportedModel(model) }
        let pre = file.metadata["tokenizer.ggml.pre"]?.string ?? "gpt2"
        let tokens = try file.stringArray("tokenizer.ggml.tokens")
        let types: [GGUFTokenType]
        if file.metadata["tokenizer.ggml.token_type"] != nil {
            types = try file.intArray("tokenizer.ggml.token_type").map { GGUFTokenType(rawValue: Int32(truncatingIfNeeded: $0)) ?? .undefined }
        } else {
            types = tokens.map { _ in .normal }
        }
        func optionalID(_ key: String) throws -> Int? {
            guard file.metadata[key] != nil else { return nil }
            return try file.int(key)
        }
        func optionalBool(_ key: String) throws -> Bool? {
            guard file.metadata[key] != nil else { return nil }
            return try file.bool(key)
        }
        var scores: [Float]?
        if model == "llama" {
            let key = "tokenizer.ggml.scores"
            let value = try file.value(key)
            guard let doubles = value.doubleArray else {
                throw GGUFError.metadataType(key: key, expected: "an array of numbers", found: value.type.description)
            }
            scores = doubles.map(Float.init)
        }
        try self.init(
            tokens: tokens, tokenTypes: types,
            merges: model == "gpt2" ? try file.stringArray("tokenizer.ggml.merges") : [],
            preTokenizer: model == "gpt2" ? pre : nil, sentencePieceScores: scores,
            bosID: try optionalID("tokenizer.ggml.bos_token_id"),
            eosID: try optionalID("tokenizer.ggml.eos_token_id"),
            unknownID: try optionalID("tokenizer.ggml.unknown_token_id"),
            paddingID: try optionalID("tokenizer.ggml.padding_token_id"),
            addBOS: try optionalBool("tokenizer.ggml.add_bos_token") ?? false,
            addEOS: try optionalBool("tokenizer.ggml.add_eos_token") ?? false,
            chatTemplate: file.metadata["tokenizer.chat_template"]?.string)
    }

    /// Builds a tokenizer from its parts (what ``init(gguf:)`` reads from the file); handy for
    /// small hand-made vocabularies.
    ///
    /// ```swift
    /// let t = try Tokenizer(tokens: alphabet + ["he", "hel"], tokenTypes: nil,
    ///                       merges: ["h e", "he l"], preTokenizer: "gpt2")
    /// ```
    /// - Parameters:
    ///   - tokens: vocabulary entries; bytes whose alphabet scalar is not one of them cannot be
    ///     encoded (see ``unencodableBytes``).
    ///   - tokenTypes: kinds of the entries (nil: all normal); control and user-defined entries are
    ///     matched in text before BPE.
    ///   - merges: "left right" lines, highest priority first.
    ///   - preTokenizer: a `tokenizer.ggml.pre` name ("smollm", "gpt2", "qwen2", ...); ignored with
    ///     `sentencePieceScores` (SentencePiece splits no words).
    ///   - sentencePieceScores: the scores of a SentencePiece vocabulary (GGUF model "llama"),
    ///     whose entries spell spaces "▁" and bytes `<0xXX>`; nil for byte-level BPE.
    public init(tokens: [String], tokenTypes: [GGUFTokenType]?, merges: [String], preTokenizer: String?,
                sentencePieceScores: [Float]? = nil,
                bosID: Int? = nil, eosID: Int? = nil, unknownID: Int? = nil, paddingID: Int? = nil,
                addBOS: Bool = false, addEOS: Bool = false, chatTemplate: String? = nil) throws {
        guard !tokens.isEmpty, tokens.count < Int(Int32.max) else {
            throw TokenizerError.invalidVocabulary("\(tokens.count) tokens")
        }
        let types = tokenTypes ?? tokens.map { _ in .normal }
        guard types.count == tokens.count else {
            throw TokenizerError.invalidVocabulary("\(types.count) token types for \(tokens.count) tokens")
        }
        let rule: PreTokenizer
        if sentencePieceScores != nil {
            rule = PreTokenizer(kind: .gpt2)   // unused: SentencePiece encodes whole stretches
        } else if let preTokenizer, let named = PreTokenizer(ggufName: preTokenizer) {
            rule = named
        } else {
            throw TokenizerError.unsupportedPreTokenizer(preTokenizer ?? "(none)")
        }
        for (name, id) in [("bos", bosID), ("eos", eosID), ("unknown", unknownID), ("padding", paddingID)] {
            if let id, !(0..<tokens.count).contains(id) {
                throw TokenizerError.invalidVocabulary("\(name) token id \(id) is not in 0..<\(tokens.count)")
            }
        }
        self.tokens = tokens
        self.tokenTypes = types
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID
        self.paddingID = paddingID
        self.addBOS = addBOS
        self.addEOS = addEOS
        self.preTokenizerName = sentencePieceScores == nil ? preTokenizer ?? "" : "sentencepiece"
        self.preTokenizer = rule
        self.chatTemplate = chatTemplate
        self.defaultSystemPrompt = chatTemplate.flatMap(ChatTemplate.defaultSystemPrompt(in:))

        var vocabulary: [String: Int32] = [:]
        vocabulary.reserveCapacity(tokens.count)
        var specials: [[([UInt8], Int32)]] = Array(repeating: [], count: 256)
        var table: [[UInt8]] = []
        table.reserveCapacity(tokens.count)
        for (i, token) in tokens.enumerated() {
            // The first entry wins if a string appears twice.
            if vocabulary[token] == nil { vocabulary[token] = Int32(i) }
            switch types[i] {
            case .control, .userDefined:
                let bytes = Array(token.utf8)
                if let first = bytes.first { specials[Int(first)].append((bytes, Int32(i))) }
                table.append(bytes)
            case .unused:
                table.append([])
            case _ where sentencePieceScores != nil:
                table.append(SentencePieceModel.bytes(of: token, type: types[i]))
            default:
                // Byte-alphabet text; a scalar outside the alphabet stands for its own UTF-8.
                table.append(ByteLevel.decode(token) ?? Array(token.utf8))
            }
        }
        for i in specials.indices { specials[i].sort { $0.0.count > $1.0.count } }
        var byteTokens = [Int32](repeating: -1, count: 256)
        var unencodable: [UInt8] = []
        for byte in 0..<256 {
            let symbol = String(Unicode.Scalar(ByteLevel.scalarForByte[byte])!)
            if let id = vocabulary[symbol] { byteTokens[byte] = id } else { unencodable.append(UInt8(byte)) }
        }
        if let scores = sentencePieceScores {
            let model = try SentencePieceModel(tokens: tokens, tokenTypes: types, scores: scores, vocabulary: vocabulary)
            unencodable = (0..<256).filter { model.byteTokens[$0] < 0 }.map(UInt8.init)
            sentencePiece = model
        } else {
            guard unencodable.count < 256 else {
                throw TokenizerError.invalidVocabulary("no token of the byte alphabet is in the vocabulary")
            }
            sentencePiece = nil
        }
        self.unencodableBytes = unencodable
        self.vocabulary = vocabulary
        self.byteTokens = byteTokens
        self.tokenByteTable = table
        self.specialByFirstByte = specials
        self.merges = BPEMerges(merges: merges, vocabulary: vocabulary)
    }

    // MARK: Encoding

    /// The token ids of `text`.
    ///
    /// ```swift
    /// tokenizer.encode("Hello world")                                 // [19556, 905]
    /// tokenizer.encode("<|im_start|>user")                            // [1, 4093]
    /// tokenizer.encode("<|im_start|>", parseSpecial: false)              // several plain-text tokens
    /// ```
    /// - Parameters:
    ///   - addSpecial: prepend ``bosID`` if ``addBOS`` and append ``eosID`` if ``addEOS`` (neither
    ///     for SmolLM2, whose prompts carry `<|im_start|>` through the chat template).
    ///   - parseSpecial: recognize the text of special tokens (`<|im_start|>`, `<|im_end|>`,
    ///     `<|endoftext|>`, ...) as those tokens; when false they are encoded as plain text.
    public func encode(_ text: String, addSpecial: Bool = false, parseSpecial: Bool = true) -> [Int] {
        var out: [Int32] = []
        if addSpecial && addBOS, let bosID { out.append(Int32(bosID)) }
        var text = text
        text.withUTF8 { bytes in
            out.reserveCapacity(out.count + bytes.count / 3 + 1)
            encodeBytes(bytes, parseSpecial: parseSpecial, into: &out)
        }
        if addSpecial && addEOS, let eosID { out.append(Int32(eosID)) }
        return out.map(Int.init)
    }

    private func encodeBytes(_ bytes: UnsafeBufferPointer<UInt8>, parseSpecial: Bool, into out: inout [Int32]) {
        var scratch = PreTokenizer.Scratch()
        var cache: [ArraySlice<UInt8>: Range<Int>] = [:]
        var cached: [Int32] = []
        var word: [Int32] = []

        func encodeStretch(_ start: Int, _ end: Int) {
            guard start < end else { return }
            if let sentencePiece {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
                sentencePiece.encode(text[...], into: &out)
                return
            }
            preTokenizer.split(bytes, from: start, to: end, scratch: &scratch) { a, b in
                if b - a == 1 {
                    let id = byteTokens[Int(bytes[a])]
                    if id >= 0 { out.append(id) }
                    return
                }
                let key = ArraySlice(UnsafeBufferPointer(rebasing: bytes[a..<b]))
                if let range = cache[key] {
                    out.append(contentsOf: cached[range])
                    return
                }
                word.removeAll(keepingCapacity: true)
                // Bytes without a token are left out; their neighbours become adjacent and may merge.
                for k in a..<b where byteTokens[Int(bytes[k])] >= 0 { word.append(byteTokens[Int(bytes[k])]) }
                let first = cached.count
                merges.apply(word, into: &cached)
                out.append(contentsOf: cached[first...])
                // Bound the cache on huge inputs with few repeats.
                if cached.count > 1 << 22 { cache.removeAll(); cached.removeAll() } else { cache[key] = first..<cached.count }
            }
        }

        var stretchStart = 0
        var i = 0
        if parseSpecial {
            while i < bytes.count {
                let candidates = specialByFirstByte[Int(bytes[i])]
                var matched: ([UInt8], Int32)?
                for candidate in candidates where candidate.0.count <= bytes.count - i {
                    var equal = true
                    for k in 1..<candidate.0.count where bytes[i + k] != candidate.0[k] { equal = false; break }
                    if equal { matched = candidate; break }
                }
                if let (text, id) = matched {
                    encodeStretch(stretchStart, i)
                    out.append(id)
                    i += text.count
                    stretchStart = i
                } else {
                    i += 1
                }
            }
        }
        encodeStretch(stretchStart, bytes.count)
    }

    // MARK: Decoding

    /// The text of `ids`. Bytes that do not form valid UTF-8 (a token sequence cut inside a
    /// character) become U+FFFD; use ``decodeBytes(_:skipSpecial:)`` to stream output.
    ///
    /// ```swift
    /// try tokenizer.decode([19556, 905])                   // "Hello world"
    /// try tokenizer.decode([1, 4093], skipSpecial: true)   // "user"
    /// ```
    /// - Parameter skipSpecial: leave out control tokens (`<|im_start|>`, ...).
    /// - Throws: ``TokenizerError/invalidTokenID(_:vocabularySize:)``.
    public func decode(_ ids: [Int], skipSpecial: Bool = false) throws -> String {
        String(decoding: try decodeBytes(ids, skipSpecial: skipSpecial), as: UTF8.self)
    }

    /// The raw bytes of `ids` (UTF-8 text, possibly cut inside a character at either end).
    ///
    /// ```swift
    /// try tokenizer.decodeBytes(tokenizer.encode("é"))   // [0xc3, 0xa9]
    /// ```
    public func decodeBytes(_ ids: [Int], skipSpecial: Bool = false) throws -> [UInt8] {
        var out: [UInt8] = []
        for id in ids {
            guard id >= 0, id < tokens.count else {
                throw TokenizerError.invalidTokenID(id, vocabularySize: tokens.count)
            }
            if skipSpecial && tokenTypes[id] == .control { continue }
            out.append(contentsOf: tokenByteTable[id])
        }
        return out
    }

    /// The bytes one token stands for.
    ///
    /// ```swift
    /// try tokenizer.tokenBytes(905)   // Array(" world".utf8)
    /// ```
    public func tokenBytes(_ id: Int) throws -> [UInt8] {
        guard id >= 0, id < tokens.count else {
            throw TokenizerError.invalidTokenID(id, vocabularySize: tokens.count)
        }
        return tokenByteTable[id]
    }

    /// The id of a vocabulary entry given as stored (byte alphabet: " world" is "Ġworld"), or of a
    /// special token ("<|im_end|>").
    public func tokenID(_ token: String) -> Int? { vocabulary[token].map(Int.init) }

    /// Whether `id` is a control token (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, ...).
    public func isControl(_ id: Int) -> Bool {
        id >= 0 && id < tokenTypes.count && tokenTypes[id] == .control
    }

    /// Whether generation should stop at `id`: the end-of-sequence token, or a control token that
    /// ends a turn or a text (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<end_of_turn>`).
    ///
    /// ```swift
    /// tokenizer.isEndOfGeneration(2)   // true: <|im_end|>
    /// ```
    public func isEndOfGeneration(_ id: Int) -> Bool {
        if id == eosID { return true }
        guard isControl(id) else { return false }
        return ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "</s>"].contains(tokens[id])
    }
}
