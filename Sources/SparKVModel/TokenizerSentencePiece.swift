/// SentencePiece's BPE as GGUF stores it (`tokenizer.ggml.model` = "llama": Gemma, Llama 2),
/// encoding the way llama.cpp's `llm_tokenizer_spm` does.
///
/// Spaces are written as "▁" (U+2581); the text's characters start as one symbol each; the
/// adjacent pair whose concatenation is a vocabulary entry with the highest score merges first
/// (ties: the leftmost), until no pair is an entry. A character without an entry is written as its
/// UTF-8 bytes with the byte tokens `<0xXX>` (byte fallback).
struct SentencePieceModel: Sendable {
    /// Entry text (with "▁" for spaces) to id; the first entry wins if a text appears twice.
    let vocabulary: [String: Int32]
    /// The score of each id (`tokenizer.ggml.scores`): higher merges first.
    let scores: [Float]
    /// The token `<0xXX>` of each byte, -1 where the vocabulary has none (the byte is dropped).
    let byteTokens: [Int32]

    /// The bytes a token stands for: "▁" as a space, `<0xXX>` byte tokens as their byte.
    static func bytes(of token: String, type: GGUFTokenType) -> [UInt8] {
        if type == .byte, let byte = byteValue(token) { return [byte] }
        var out: [UInt8] = []
        for scalar in token.unicodeScalars {
            if scalar == "\u{2581}" { out.append(0x20) } else { out += Array(String(scalar).utf8) }
        }
        return out
    }

    /// The byte of a token spelled `<0xXX>`.
    static func byteValue(_ token: String) -> UInt8? {
        guard token.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") else { return nil }
        return UInt8(token.dropFirst(3).prefix(2), radix: 16)
    }

    init(tokens: [String], tokenTypes: [GGUFTokenType], scores: [Float], vocabulary: [String: Int32]) throws {
        guard scores.count == tokens.count else {
            throw TokenizerError.invalidVocabulary("\(scores.count) scores for \(tokens.count) tokens")
        }
        self.vocabulary = vocabulary
        self.scores = scores
        var byteTokens = [Int32](repeating: -1, count: 256)
        for (i, token) in tokens.enumerated() where tokenTypes[i] == .byte {
            if let byte = Self.byteValue(token), byteTokens[Int(byte)] < 0 { byteTokens[Int(byte)] = Int32(i) }
        }
        self.byteTokens = byteTokens
    }

    /// One symbol of the merge: a byte range of the (▁-substituted) text, linked to its neighbours.
    private struct Symbol {
        var start: Int, length: Int
        var previous: Int, next: Int
    }

    /// Appends the ids of `text` (no special tokens in it) to `out`.
    func encode(_ text: Substring, into out: inout [Int32]) {
        // " " -> "▁" (U+2581, UTF-8 E2 96 81)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        for b in text.utf8 { if b == 0x20 { bytes += [0xe2, 0x96, 0x81] } else { bytes.append(b) } }
        guard !bytes.isEmpty else { return }
        // One symbol per UTF-8 character (a truncated sequence at the end is one symbol).
        var symbols: [Symbol] = []
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            let length = min(b < 0xc0 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4, bytes.count - i)
            symbols.append(Symbol(start: i, length: length, previous: symbols.count - 1, next: symbols.count + 1))
            i += length
        }
        symbols[symbols.count - 1].next = -1

        func piece(_ start: Int, _ length: Int) -> String {
            String(decoding: bytes[start..<start + length], as: UTF8.self)
        }
        /// A candidate merge: its score, left symbol and the byte length it had when queued.
        struct Bigram { var score: Float, left: Int, right: Int, length: Int }
        var queue: [Bigram] = []
        func better(_ a: Bigram, _ b: Bigram) -> Bool { a.score > b.score || (a.score == b.score && a.left < b.left) }
        func push(_ bigram: Bigram) {
            queue.append(bigram)
            var c = queue.count - 1
            while c > 0, better(queue[c], queue[(c - 1) / 2]) { queue.swapAt(c, (c - 1) / 2); c = (c - 1) / 2 }
        }
        func pop() -> Bigram? {
            guard let top = queue.first else { return nil }
            let last = queue.removeLast()
            if !queue.isEmpty {
                queue[0] = last
                var p = 0
                while true {
                    let l = 2 * p + 1, r = l + 1
                    var m = p
                    if l < queue.count, better(queue[l], queue[m]) { m = l }
                    if r < queue.count, better(queue[r], queue[m]) { m = r }
                    if m == p { break }
                    queue.swapAt(p, m); p = m
                }
            }
            return top
        }
        func tryAdd(_ left: Int, _ right: Int) {
            guard left >= 0, right >= 0 else { return }
            let merged = piece(symbols[left].start, symbols[left].length + symbols[right].length)
            guard let id = vocabulary[merged] else { return }
            push(Bigram(score: scores[Int(id)], left: left, right: right, length: merged.utf8.count))
        }
        for s in 1..<symbols.count { tryAdd(s - 1, s) }
        while let bigram = pop() {
            let left = bigram.left, right = bigram.right
            // Stale: one side was merged away since the pair was queued.
            guard symbols[left].length > 0, symbols[right].length > 0,
                  symbols[left].length + symbols[right].length == bigram.length else { continue }
            symbols[left].length += symbols[right].length
            symbols[right].length = 0
            symbols[left].next = symbols[right].next
            if symbols[right].next >= 0 { symbols[symbols[right].next].previous = left }
            tryAdd(symbols[left].previous, left)
            tryAdd(left, symbols[left].next)
        }
        // Every merge made an entry, so a final symbol is an entry, or a single character
        // without one: its bytes. (llama.cpp's resegment also looks up the merge that made a
        // non-entry, which by the same argument never exists.)
        var s = 0
        while s >= 0 {
            let symbol = symbols[s]
            if let id = vocabulary[piece(symbol.start, symbol.length)] {
                out.append(id)
            } else {
                for k in symbol.start..<symbol.start + symbol.length where byteTokens[Int(bytes[k])] >= 0 {
                    out.append(byteTokens[Int(bytes[k])])
                }
            }
            s = symbol.next
        }
    }
}
