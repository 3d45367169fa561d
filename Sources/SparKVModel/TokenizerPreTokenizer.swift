/// Cuts text into the words BPE runs on, the way the model's tokenizer was trained.
///
/// The GPT-2 rule is the regular expression
///
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///
/// matched leftmost-first from the start of the text, each match a word. SmolLM2 ("smollm" in
/// `tokenizer.ggml.pre`, like starcoder, refact, command-r, codeshell, exaone, minerva) first
/// isolates every \p{N} scalar as a word of its own, then applies the GPT-2 rule to each stretch
/// between digits (Hugging Face: `Sequence[Digits(individual_digits), ByteLevel(use_regex)]`). It is
/// implemented here as a hand-written scanner over Unicode scalars, equivalent to the regex:
/// \p{L} is the letter categories (Lu Ll Lt Lm Lo), \p{N} the number categories (Nd Nl No) and \s
/// the Unicode White_Space property. Grapheme clusters play no part ("\r\n" is two scalars).
///
/// Qwen2 ("qwen2") uses Llama 3's regex with single digits:
///
///     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
///
/// (contractions in any case; a letter run takes one leading non-letter, non-digit, non-newline
/// scalar, such as a space, a tab or a quote; punctuation runs take the newlines after them;
/// whitespace up to its last newline is one word).
struct PreTokenizer: Sendable {
    enum Kind: Sendable {
        /// The GPT-2 regex alone.
        case gpt2
        /// Each \p{N} scalar alone, then the GPT-2 regex on the stretches between them.
        case digitsThenGPT2
        /// Qwen2's regex (Llama 3's with `\p{N}` instead of `\p{N}{1,3}`).
        case qwen2
    }

    let kind: Kind

    /// The rule for a `tokenizer.ggml.pre` name; nil for names this tokenizer does not implement.
    init?(ggufName: String) {
        switch ggufName {
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva":
            kind = .digitsThenGPT2
        case "gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion":
            kind = .gpt2
        case "qwen2", "deepseek-r1-qwen":
            kind = .qwen2
        default:
            return nil
        }
    }

    init(kind: Kind) { self.kind = kind }

    static let letter: UInt8 = 0, number: UInt8 = 1, space: UInt8 = 2, other: UInt8 = 3

    /// Classes of the ASCII scalars.
    static let asciiClass: [UInt8] = (0..<128).map { c -> UInt8 in
        switch c {
        case 0x41...0x5a, 0x61...0x7a: return letter
        case 0x30...0x39: return number
        case 0x09...0x0d, 0x20: return space
        default: return other
        }
    }

    @inline(__always)
    static func classify(_ v: UInt32) -> UInt8 {
        if v < 128 { return asciiClass[Int(v)] }
        let properties = Unicode.Scalar(v)!.properties
        if properties.isWhitespace { return space }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return other
        }
    }

    /// Reusable buffers of one encode call.
    struct Scratch {
        var scalars: [UInt32] = []
        var classes: [UInt8] = []
        /// Byte offset of each scalar, plus the end offset.
        var offsets: [Int] = []
    }

    /// Calls `emit(start, end)` with the byte range of each word of `bytes[start..<end]` (valid
    /// UTF-8), in order; the ranges tile the input.
    func split(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int, scratch: inout Scratch,
               emit: (Int, Int) -> Void) {
        scratch.scalars.removeAll(keepingCapacity: true)
        scratch.classes.removeAll(keepingCapacity: true)
        scratch.offsets.removeAll(keepingCapacity: true)
        var i = start
        while i < end {
            let b0 = UInt32(bytes[i])
            var v: UInt32
            var length: Int
            if b0 < 0x80 {
                v = b0; length = 1
            } else if b0 < 0xe0 {
                v = b0 & 0x1f; length = 2
            } else if b0 < 0xf0 {
                v = b0 & 0x0f; length = 3
            } else {
                v = b0 & 0x07; length = 4
            }
            length = min(length, end - i)
            for k in 1..<max(length, 1) { v = v << 6 | UInt32(bytes[i + k] & 0x3f) }
            scratch.scalars.append(v)
            scratch.classes.append(Self.classify(v))
            scratch.offsets.append(i)
            i += length
        }
        scratch.offsets.append(end)
        let n = scratch.scalars.count
        switch kind {
        case .gpt2:
            gpt2(scratch, 0, n, emit)
        case .digitsThenGPT2:
            var a = 0
            for j in 0..<n where scratch.classes[j] == Self.number {
                if a < j { gpt2(scratch, a, j, emit) }
                emit(scratch.offsets[j], scratch.offsets[j + 1])
                a = j + 1
            }
            if a < n { gpt2(scratch, a, n, emit) }
        case .qwen2:
            qwen2(scratch, 0, n, emit)
        }
    }

    /// Qwen2's regex over scalars `a..<b` of `s` (llama.cpp's hand-written Llama 3 splitter with
    /// one digit per number word).
    private func qwen2(_ s: Scratch, _ a: Int, _ b: Int, _ emit: (Int, Int) -> Void) {
        let scalars = s.scalars, classes = s.classes, offsets = s.offsets
        func isNewline(_ j: Int) -> Bool { scalars[j] == 0x0a || scalars[j] == 0x0d }
        func lower(_ j: Int) -> UInt32 { scalars[j] >= 0x41 && scalars[j] <= 0x5a ? scalars[j] + 0x20 : scalars[j] }
        var i = a
        while i < b {
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if scalars[i] == 0x27, i + 1 < b {
                let n1 = lower(i + 1)
                if n1 == 0x73 || n1 == 0x74 || n1 == 0x6d || n1 == 0x64 {   // s t m d
                    emit(offsets[i], offsets[i + 2]); i += 2; continue
                }
                if i + 2 < b {
                    let n2 = lower(i + 2)
                    if (n1 == 0x72 && n2 == 0x65) || (n1 == 0x76 && n2 == 0x65) || (n1 == 0x6c && n2 == 0x6c) {  // re ve ll
                        emit(offsets[i], offsets[i + 3]); i += 3; continue
                    }
                }
            }
            let cls = classes[i]
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if cls == Self.letter || (cls != Self.number && !isNewline(i) && i + 1 < b && classes[i + 1] == Self.letter) {
                var e = i + 1
                while e < b && classes[e] == Self.letter { e += 1 }
                emit(offsets[i], offsets[e]); i = e; continue
            }
            // \p{N}
            if cls == Self.number {
                emit(offsets[i], offsets[i + 1]); i += 1; continue
            }
            // " ?[^\s\p{L}\p{N}]+[\r\n]*"
            let j = scalars[i] == 0x20 && i + 1 < b && classes[i + 1] == Self.other ? i + 1 : i
            if classes[j] == Self.other {
                var e = j + 1
                while e < b && classes[e] == Self.other { e += 1 }
                while e < b && isNewline(e) { e += 1 }
                emit(offsets[i], offsets[e]); i = e; continue
            }
            // \s*[\r\n]+ : the whitespace run up to its last newline; else "\s+(?!\S)|\s+" as in GPT-2.
            var e = i
            var lastNewline = -1
            while e < b && classes[e] == Self.space {
                if isNewline(e) { lastNewline = e }
                e += 1
            }
            if lastNewline >= 0 {
                emit(offsets[i], offsets[lastNewline + 1]); i = lastNewline + 1; continue
            }
            if e == b || e - i == 1 {
                emit(offsets[i], offsets[e]); i = e
            } else {
                emit(offsets[i], offsets[e - 1]); i = e - 1
            }
        }
    }

    /// The GPT-2 regex over scalars `a..<b` of `s`.
    private func gpt2(_ s: Scratch, _ a: Int, _ b: Int, _ emit: (Int, Int) -> Void) {
        let scalars = s.scalars, classes = s.classes, offsets = s.offsets
        var i = a
        while i < b {
            let c = scalars[i]
            // 's 't 're 've 'm 'll 'd (lower case only, like the regex)
            if c == 0x27, i + 1 < b {
                let n1 = scalars[i + 1]
                if n1 == 0x73 || n1 == 0x74 || n1 == 0x6d || n1 == 0x64 {   // s t m d
                    emit(offsets[i], offsets[i + 2]); i += 2; continue
                }
                if i + 2 < b {
                    let n2 = scalars[i + 2]
                    if (n1 == 0x72 && n2 == 0x65) || (n1 == 0x76 && n2 == 0x65) || (n1 == 0x6c && n2 == 0x6c) {  // re ve ll
                        emit(offsets[i], offsets[i + 3]); i += 3; continue
                    }
                }
            }
            // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional space, then a run of one class.
            var j = i
            if c == 0x20, i + 1 < b, classes[i + 1] != Self.space { j = i + 1 }
            let cls = classes[j]
            if cls != Self.space {
                var e = j + 1
                while e < b && classes[e] == cls { e += 1 }
                emit(offsets[i], offsets[e]); i = e; continue
            }
            // "\s+(?!\S)": a whitespace run that ends the text, or all of it but its last scalar
            // when a non-space follows; "\s+" catches a single whitespace before a non-space.
            var e = i + 1
            while e < b && classes[e] == Self.space { e += 1 }
            if e == b || e - i == 1 {
                emit(offsets[i], offsets[e]); i = e
            } else {
                emit(offsets[i], offsets[e - 1]); i = e - 1
            }
        }
    }
}
