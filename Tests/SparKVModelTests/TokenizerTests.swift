import Foundation
import Testing

@testable import SparKVModel

extension SmolLM2Fixture {
    /// The model's tokenizer, or the error building it.
    static let tokenizer: Result<Tokenizer, any Error>? = file.map { file in Result { try Tokenizer(gguf: file) } }
}

/// FNV-1a over 64-bit values (token ids or bytes): a compact fingerprint of a long sequence.
func fnv1a<S: Sequence>(_ values: S) -> UInt64 where S.Element: BinaryInteger {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for v in values { h = (h ^ UInt64(v)) &* 0x100_0000_01b3 }
    return h
}


// MARK: - Without the model: the alphabet, the pre-tokenizer and BPE on a tiny vocabulary

@Suite("Tokenizer: byte-level BPE parts")
struct TokenizerPartsTests {
    /// Pieces of `text` as the pre-tokenizer cuts them.
    static func pieces(_ text: String, _ kind: PreTokenizer.Kind = .digitsThenGPT2) -> [String] {
        var out: [String] = []
        var text = text
        text.withUTF8 { bytes in
            var scratch = PreTokenizer.Scratch()
            PreTokenizer(kind: kind).split(bytes, from: 0, to: bytes.count, scratch: &scratch) { a, b in
                out.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[a..<b]), as: UTF8.self))
            }
        }
        return out
    }

    @Test func byteAlphabetIsGPT2s() {
        #expect(ByteLevel.encode(Array(" \n\t!~".utf8)) == "ĠĊĉ!~")
        #expect(ByteLevel.encode([0x00, 0x7f, 0xa0, 0xad, 0xff]) == "ĀġłŃÿ")
        let all = (0...255).map(UInt8.init)
        #expect(ByteLevel.decode(ByteLevel.encode(all)) == all)
        #expect(Set(ByteLevel.scalarForByte).count == 256)
        #expect(ByteLevel.decode("a\u{4e00}") == nil)
    }

    /// Expected pieces from Hugging Face `tokenizers` 0.23 (`pre_tokenize_str` of
    /// Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)],
    /// SmolLM2's pre-tokenizer), byte alphabet decoded back to text.
    @Test(arguments: [
        ("Hello world", ["Hello", " world"]),
        ("I'm 12345 years", ["I", "'m", " ", "1", "2", "3", "4", "5", " years"]),
        ("  a  b\n\nc", [" ", " a", " ", " b", "\n", "\n", "c"]),
        ("a\u{a0}\u{a0}b", ["a", "\u{a0}", "\u{a0}", "b"]),
        ("a\u{3000}\u{3000}b", ["a", "\u{3000}", "\u{3000}", "b"]),
        ("a\u{1c}\u{1c}b", ["a", "\u{1c}\u{1c}", "b"]),
        ("a\u{85}\u{85}b", ["a", "\u{85}", "\u{85}", "b"]),
        ("a\u{200b}\u{200b}b", ["a", "\u{200b}\u{200b}", "b"]),
        ("x\u{301}\u{301}y", ["x", "\u{301}\u{301}", "y"]),
        ("a \u{bd}\u{b2} b", ["a", " ", "\u{bd}", "\u{b2}", " b"]),
        ("x\u{2167}y", ["x", "\u{2167}", "y"]),
        ("it's 'S 'll", ["it", "'s", " '", "S", " '", "ll"]),
        ("a\t\tb", ["a", "\t", "\t", "b"]),
        ("a\r\n\r\nb", ["a", "\r\n\r", "\n", "b"]),
        ("A1 2 3b", ["A", "1", " ", "2", " ", "3", "b"]),
        ("\u{661}\u{662}\u{663}", ["\u{661}", "\u{662}", "\u{663}"]),
        ("end  ", ["end", "  "]),
        ("''s!?'ve", ["''", "s", "!?'", "ve"]),
    ])
    func smollmPreTokenizerCutsLikeHuggingFace(text: String, expected: [String]) {
        let got = Self.pieces(text)
        #expect(got.map { Array($0.unicodeScalars) } == expected.map { Array($0.unicodeScalars) })
    }

    @Test func gpt2PreTokenizerKeepsNumbersTogether() {
        #expect(Self.pieces("I have 12345 cats", .gpt2) == ["I", " have", " 12345", " cats"])
        #expect(Self.pieces("I have 12345 cats", .digitsThenGPT2) == ["I", " have", " ", "1", "2", "3", "4", "5", " cats"])
    }

    @Test func piecesTileTheInput() {
        var random = TestRng(7)
        let alphabet: [String] = ["a", "Z", " ", "  ", "\n", "\t", "1", "9", "'", "'s", "!", "é", "ß", "中", "😀", "\u{301}", "\u{a0}", ".", "-"]
        for _ in 0..<500 {
            let text = (0..<random.below(30)).map { _ in alphabet[random.below(alphabet.count)] }.joined()
            let pieces = Self.pieces(text)
            #expect(pieces.joined() == text)
            #expect(!pieces.contains(""))
        }
    }

    /// A vocabulary of the 256 byte symbols plus a few merges.
    static func tinyTokenizer() throws -> Tokenizer {
        let alphabet = (0...255).map { ByteLevel.encode([UInt8($0)]) }
        let merged = ["ab", "abc", "Ġab", "aa", "aaaa", "<s>"]
        var types = [GGUFTokenType](repeating: .normal, count: alphabet.count + merged.count)
        types[types.count - 1] = .control
        return try Tokenizer(tokens: alphabet + merged, tokenTypes: types,
                             merges: ["a b", "ab c", "Ġ ab", "a a", "aa aa", "x y"], preTokenizer: "gpt2",
                             eosID: 261, addEOS: true)
    }

    @Test func bpeAppliesMergesByRank() throws {
        let t = try Self.tinyTokenizer()
        func id(_ s: String) -> Int { t.tokenID(s)! }
        #expect(t.mergeCount == 5)   // "x y" has no merged token
        #expect(t.encode("abc") == [id("abc")])
        #expect(t.encode(" ab") == [id("Ġab")])
        #expect(t.encode("abd") == [id("ab"), t.tokenID("d")!])
        #expect(t.encode("aaa") == [id("aa"), id("a")])            // leftmost pair first
        #expect(t.encode("aaaaa") == [id("aaaa"), id("a")])
        #expect(t.encode("cab") == [id("c"), id("ab")])
        #expect(t.encode("<s>ab") == [id("<s>"), id("ab")])
        #expect(t.encode("<s>", parseSpecial: false).count == 3)
        #expect(t.encode("ab", addSpecial: true) == [id("ab"), id("<s>")])   // addEOS
    }

    @Test func shortAndLongBPEAgree() throws {
        let t = try Self.tinyTokenizer()
        var random = TestRng(11)
        let symbols = [0x61, 0x62, 0x63, 0x20].map { t.byteTokens[$0] }
        for _ in 0..<300 {
            let word = (0..<(2 + random.below(80))).map { _ in symbols[random.below(symbols.count)] }
            var short: [Int32] = [], long: [Int32] = []
            t.merges.applyShort(word, into: &short)
            t.merges.applyLong(word, into: &long)
            #expect(short == long)
        }
    }

    @Test func vocabularyProblemsAreReported() throws {
        let alphabet = (0...255).map { ByteLevel.encode([UInt8($0)]) }
        #expect(throws: TokenizerError.invalidVocabulary("0 tokens")) {
            _ = try Tokenizer(tokens: [], tokenTypes: nil, merges: [], preTokenizer: "gpt2")
        }
        #expect(throws: TokenizerError.unsupportedPreTokenizer("llama-bpe")) {
            _ = try Tokenizer(tokens: alphabet, tokenTypes: nil, merges: [], preTokenizer: "llama-bpe")
        }
        #expect(throws: TokenizerError.self) {
            _ = try Tokenizer(tokens: ["<s>"], tokenTypes: [.control], merges: [], preTokenizer: "gpt2")
        }
        // A byte without a token is dropped (as Hugging Face and llama.cpp do); its neighbours meet.
        var missing = alphabet
        missing[0x04] = "<unused>"
        let lossy = try Tokenizer(tokens: missing + ["!!"], tokenTypes: nil, merges: ["! !"], preTokenizer: "gpt2")
        #expect(lossy.unencodableBytes == [0x04])
        #expect(lossy.encode("!\u{4}!") == [256])
        #expect(lossy.encode("a\u{4}a") == [0x61, 0x61])
        #expect(lossy.encode("\u{4}") == [])
        #expect(throws: TokenizerError.self) {
            _ = try Tokenizer(tokens: alphabet, tokenTypes: nil, merges: [], preTokenizer: "gpt2", bosID: 256)
        }
        let t = try Tokenizer(tokens: alphabet, tokenTypes: nil, merges: [], preTokenizer: "smollm")
        #expect(throws: TokenizerError.invalidTokenID(256, vocabularySize: 256)) { _ = try t.decode([256]) }
        #expect(throws: TokenizerError.invalidTokenID(-1, vocabularySize: 256)) { _ = try t.decode([-1]) }
    }

    @Test func defaultSystemPromptIsReadFromTheTemplate() {
        let smol = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            + "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
            + "{% endif %}"
        #expect(ChatTemplate.defaultSystemPrompt(in: smol) == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        #expect(ChatTemplate.defaultSystemPrompt(in: "{{'<|im_start|>system\\nBe terse.<|im_end|>'}}") == "Be terse.")
        #expect(ChatTemplate.defaultSystemPrompt(in: "{{'<|im_start|>' + message['role'] + '\\n'}}") == nil)
        #expect(ChatTemplate.defaultSystemPrompt(in: "{{ '<|im_start|>system\n' + message['content'] + '<|im_end|>' }}") == nil)
    }
}

// MARK: - SmolLM2's tokenizer

@Suite("Tokenizer: SmolLM2-135M-Instruct")
struct TokenizerSmolLM2Tests {
    var tokenizer: Tokenizer {
        get throws { try #require(SmolLM2Fixture.tokenizer, SmolLM2Fixture.missingMessage).get() }
    }

    @Test func vocabularyAndSpecialIDs() throws {
        let t = try tokenizer
        #expect(t.vocabularySize == 49152)
        #expect(t.mergeCount == 48900)
        #expect(t.preTokenizerName == "smollm")
        #expect(t.bosID == 1 && t.eosID == 2 && t.unknownID == 0 && t.paddingID == 2)
        #expect(!t.addBOS && !t.addEOS)
        #expect(t.tokenTypes.filter { $0 == .control }.count == 17)
        #expect(t.tokenID("<|endoftext|>") == 0 && t.tokenID("<|im_start|>") == 1 && t.tokenID("<|im_end|>") == 2)
        #expect(t.tokenID("Ġworld") == 905)
        #expect(try t.tokenBytes(905) == Array(" world".utf8))
        #expect(t.isEndOfGeneration(2) && t.isEndOfGeneration(0) && !t.isEndOfGeneration(1) && !t.isEndOfGeneration(905))
    }

    /// Expected ids from Hugging Face `tokenizers` 0.23.3 (pip), configured as SmolLM2's
    /// tokenizer.json (BPE without dropout or byte fallback; pre-tokenizer
    /// Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)];
    /// ByteLevel decoder; the 17 control tokens as special added tokens) with the vocabulary and
    /// merges read from this GGUF by the `gguf` 0.19 package; `encode(s, add_special_tokens=False)`.
    /// Each was also checked to decode back to its string there. The "smollm" pre-tokenizer of
    /// llama.cpp is the same rule (\p{N} split, then the GPT-2 regex).
    static let handChecked: [(String, [Int])] = [
        ("Hello world", [19556, 905]),
        ("The quick brown fox jumps over the lazy dog.", [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30]),
        ("I'm sure they'll say it's fine, don't you think? We've seen it.",
         [57, 5248, 2090, 502, 3060, 1643, 357, 506, 4979, 28, 1326, 982, 346, 1510, 47, 1046, 3543, 2269, 357, 30]),
        ("Numbers 12345 and 3.14159 and 1,000,000",
         [39006, 216, 33, 34, 35, 36, 37, 284, 216, 35, 30, 33, 36, 33, 37, 41, 284, 216, 33, 28, 32, 32, 32, 28, 32, 32, 32]),
        ("  leading and trailing spaces  ", [216, 2899, 284, 35079, 5600, 256]),
        ("tabs\tand\nnewlines\r\nmixed", [100, 7366, 197, 397, 198, 2241, 5110, 201, 198, 35781]),
        ("Café naïve résumé façade Ångström",
         [51, 1939, 2756, 15486, 46494, 412, 2756, 5422, 2756, 40852, 5549, 223, 863, 1321, 45682]),
        ("Россия и Україна", [155, 250, 6485, 9382, 9382, 37187, 29972, 5470, 113, 13760, 23728, 156, 241, 38759]),
        ("你好，世界！", [18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230, 8083, 219]),
        ("日本語のテキスト", [23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226]),
        ("Emoji: 😀👍🏽🇺🇸 and ❤\u{fe0f}",
         [10809, 33777, 42, 40303, 218, 10813, 235, 231, 10813, 233, 138, 10813, 225, 135, 10813, 225, 133, 284, 4636, 247, 114, 31752]),
        ("def foo(x):\n    return x ** 2  # comment", [1604, 29856, 24, 104, 727, 472, 1003, 1792, 1903, 216, 34, 216, 907, 5189]),
        ("<|im_start|>user\nHi!<|im_end|>\n", [1, 4093, 198, 26843, 17, 2, 198]),
        ("a<|endoftext|>b<|im_end|><|im_start|>", [81, 0, 82, 2, 1]),
        ("x\u{301}\u{301}y \u{a0}\u{a0}z\u{1c}", [104, 151, 219, 151, 219, 105, 3351, 250, 15442, 106, 213]),
        ("ÿ\u{0}\u{7f}", [142, 140, 190, 217]),
        ("'S 'll 're've", [23, 67, 637, 764, 637, 257, 3543]),
        ("\n\n\n   \n", [13272, 198]),
        ("\u{661}\u{662}\u{663} Ⅷ ½", [164, 111, 164, 112, 164, 113, 216, 173, 223, 117, 216, 16738]),
        ("SparKV prunes key channels per token.", [67, 1095, 59, 70, 694, 14992, 1646, 8247, 567, 9624, 30]),
    ]

    @Test(arguments: 0..<handChecked.count)
    func encodesLikeTheReference(index: Int) throws {
        let t = try tokenizer
        let (text, expected) = Self.handChecked[index]
        #expect(t.encode(text) == expected)
        #expect(try t.decodeBytes(expected) == Array(text.utf8))
    }

    @Test func bytesWithoutATokenAreDroppedLikeTheReference() throws {
        let t = try tokenizer
        #expect(t.unencodableBytes == [0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xc0, 0xc1, 0xf1, 0xf2] + Array(0xf5...0xff))
        // Reference ids as in handChecked.
        #expect(t.encode("!\u{4}!") == [10095])   // "!!": the neighbours merge
        #expect(t.encode("ab\u{6}c") == [369, 83])
        #expect(t.encode("\u{1d}\u{1d}  \u{13}") == [216, 216])
        let text = "Plain text\twith tabs, newlines\n, DEL \u{7f}, NUL \u{0} and ESC \u{1b} round-trips."
        #expect(try t.decode(t.encode(text)) == text)
    }

    @Test func specialTokensAreMatchedBeforeBPE() throws {
        let t = try tokenizer
        #expect(t.encode("<|im_start|>") == [1])
        #expect(t.encode("<|im_end|><|endoftext|>") == [2, 0])
        #expect(t.encode("<|im_start|>system") == [1, 9690])
        #expect(t.encode("<jupyter_code>x") == [13, 104])
        // As plain text they are several ordinary tokens that still decode to the same text.
        let plain = t.encode("<|im_start|>", parseSpecial: false)
        #expect(plain.count > 1 && !plain.contains(where: t.isControl))
        #expect(try t.decode(plain) == "<|im_start|>")
        // Fragments are ordinary text.
        #expect(!t.encode("<|im_start| <|im_end").contains(where: t.isControl))
        #expect(try t.decode([1, 4093, 198, 26843, 17, 2], skipSpecial: true) == "user\nHi!")
        #expect(try t.decode([1, 4093, 198, 26843, 17, 2]) == "<|im_start|>user\nHi!<|im_end|>")
        // addSpecial adds nothing for SmolLM2 (add_bos_token is false).
        #expect(t.encode("Hello", addSpecial: true) == t.encode("Hello"))
    }

    @Test func chatTemplateMatchesTheModelsJinjaTemplate() throws {
        let t = try tokenizer
        let system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        #expect(t.defaultSystemPrompt == system)
        #expect(t.chatTemplate?.contains("<|im_start|>system\n" + system + "<|im_end|>") == true)
        let prompt = t.chatPrompt([.user("What is 2+2?")])
        #expect(prompt == "<|im_start|>system\n\(system)<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
        #expect(t.chatPrompt(user: "What is 2+2?") == prompt)
        #expect(t.chatPrompt(user: "Hi", system: "Be brief.")
            == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        let turns = t.chatPrompt([.user("Hi"), .assistant("Hello!"), .user("Bye")], addGenerationPrompt: false)
        #expect(turns == "<|im_start|>system\n\(system)<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            + "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n")
        #expect(t.chatPrompt([]) == "<|im_start|>assistant\n")
        // Reference ids (Hugging Face tokenizers, as above) of the rendered prompt.
        #expect(t.encode(prompt) == [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
                                     407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1,
                                     520, 9531, 198])
    }

    @Test func gplTextEncodesLikeTheReferenceAndRoundTrips() throws {
        let t = try tokenizer
        let path = "/usr/share/common-licenses/GPL-3"
        guard let data = FileManager.default.contents(atPath: path) else {
            Issue.record("\(path) is missing (Debian's base-files ships it)"); return
        }
        let bytes = [UInt8](data)
        let text = String(decoding: bytes, as: UTF8.self)
        let ids = t.encode(text)
        #expect(try t.decodeBytes(ids) == bytes)
        #expect(try t.decode(ids) == text)
        // Debian 12's GPL-3 (35149 bytes): 7639 tokens by the reference tokenizer, fingerprinted.
        if bytes.count == 35149 && fnv1a(bytes) == 0x3a7b_2fcb_c1b6_6470 {
            #expect(ids.count == 7639)
            #expect(fnv1a(ids) == 0xd672_019d_d832_e2ed)
            #expect(Array(ids.prefix(12)) == [42185, 28807, 35185, 49126, 35696, 45581, 41026, 16997, 13867, 216, 35, 28])
        }
    }

    @Test func longRunsUseTheHeapPathAndMatchTheReference() throws {
        let t = try tokenizer
        let text = String(repeating: " ", count: 5000) + String(repeating: "a", count: 10000) + String(repeating: "!", count: 3000)
        let ids = t.encode(text)
        #expect(ids.count == 3331)
        #expect(fnv1a(ids) == 0x2606_21c6_558f_551c)
        #expect(try t.decode(ids) == text)
    }

    @Test func randomUTF8RoundTripsExactly() throws {
        let t = try tokenizer
        var random = TestRng(2024)
        let pools: [ClosedRange<UInt32>] = [
            0x00...0x7f, 0x20...0x7e, 0x20...0x7e, 0x80...0x7ff, 0x300...0x36f, 0x400...0x4ff, 0x3040...0x30ff,
            0x4e00...0x9fff, 0xac00...0xd7a3, 0x1f300...0x1faff, 0x10000...0x10ffff, 0x2000...0x206f, 0xe000...0xf8ff,
        ]
        let fragments = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "|>", "'s", "'ll", "\r\n", "  ", "0123"]
        for _ in 0..<1500 {
            var text = String.UnicodeScalarView()
            for _ in 0..<random.below(60) {
                if random.below(10) == 0 {
                    text.append(contentsOf: fragments[random.below(fragments.count)].unicodeScalars)
                    continue
                }
                let pool = pools[random.below(pools.count)]
                let v = pool.lowerBound + UInt32(random.below(Int(pool.upperBound - pool.lowerBound) + 1))
                if let scalar = Unicode.Scalar(v) { text.append(scalar) }
            }
            let s = String(text)
            let ids = t.encode(s)
            // Bytes the vocabulary has no token for are dropped (see unencodableBytes).
            let expected = Array(s.utf8).filter { !t.unencodableBytes.contains($0) }
            #expect(try t.decodeBytes(ids) == expected, "\(s.unicodeScalars.map { String($0.value, radix: 16) })")
            #expect(ids.allSatisfy { (0..<t.vocabularySize).contains($0) })
        }
    }

    @Test func encodesThirtyThousandTokensQuickly() throws {
        let t = try tokenizer
        guard let data = FileManager.default.contents(atPath: "/usr/share/common-licenses/GPL-3") else { return }
        let text = String(repeating: String(decoding: data, as: UTF8.self), count: 4)
        let clock = ContinuousClock()
        var ids: [Int] = []
        let elapsed = clock.measure { ids = t.encode(text) }
        #expect(ids.count > 30_000)
        // Well under a second in release; generous here because tests may be built for debugging.
        #expect(elapsed < .seconds(10), "encoding \(ids.count) tokens took \(elapsed)")
    }
}
