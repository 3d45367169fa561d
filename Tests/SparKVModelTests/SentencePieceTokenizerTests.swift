import Foundation
import Testing

@testable import SparKVModel

extension KnownModelFixture {
    /// Gemma 3's tokenizer, built once.
    static let gemmaTokenizer: Result<Tokenizer, any Error> = gemma.flatMap { file in Result { try Tokenizer(gguf: file) } }

    /// The tokenizer; fails the calling test when the model is missing.
    static func requireGemmaTokenizer(sourceLocation: SourceLocation = #_sourceLocation) throws -> Tokenizer {
        _ = try requireFile(.gemma3_270M, sourceLocation: sourceLocation)
        return try gemmaTokenizer.get()
    }
}

// Issue 13: SentencePiece (GGUF tokenizer model "llama", byte fallback) as Gemma 3 uses it.

@Suite("Tokenizer: SentencePiece (Gemma 3 270M)")
struct SentencePieceTokenizerTests {
    /// Expected ids from llama.cpp: llama-cpp-python 0.3.36 (pip, in a throwaway venv, built with
    /// CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON"),
    /// `Llama(model_path=<this GGUF>, vocab_only=True).tokenize(s.encode(), add_bos=False, special=True)`;
    /// each also detokenized back to its string there. Characters without an entry (the
    /// Mathematical Fraktur letters, U+00A0) come out as byte tokens `<0xXX>`.
    static let llamaCppReference: [(String, [Int])] = [
        ("Hello world",
         [9259, 1902]),
        ("The capital of France is",
         [818, 5279, 529, 7001, 563]),
        ("I'm sure they'll say it's fine, don't you think?",
         [236777, 236789, 236757, 2889, 901, 236789, 859, 1879, 625, 236789, 236751, 5851, 236764, 1537, 236789, 236745, 611, 1751, 236881]),
        ("Numbers 12345 and 3.14159 and 1,000,000",
         [37091, 236743, 236770, 236778, 236800, 236812, 236810, 532, 236743, 236800, 236761, 236770, 236812, 236770, 236810, 236819, 532, 236743, 236770, 236764, 236771, 236771, 236771, 236764, 236771, 236771, 236771]),
        ("  leading and trailing spaces  ",
         [138, 26016, 532, 45330, 9952, 138]),
        ("tabs\tand\nnewlines\r\nmixed",
         [39218, 255968, 624, 107, 208697, 251, 107, 63258]),
        ("\n\n\n   \n",
         [109, 139, 107]),
        ("Café naïve résumé façade Ångström",
         [160319, 236859, 120362, 118515, 96008, 44667, 829, 80406]),
        ("Россия и Україна",
         [43562, 68568, 1079, 27030, 911]),
        ("你好，世界！",
         [144626, 236900, 12811, 237354]),
        ("日本語のテキスト",
         [94951, 236945, 95830]),
        ("Emoji: 😀👍🏽🇺🇸 and ❤\u{fe0f}",
         [127268, 236787, 163543, 240493, 242713, 243721, 243912, 532, 64813]),
        ("def fib(n):\n    if n < 2:\n        return n\n    return fib(n-1) + fib(n-2)\n",
         [2063, 10779, 236769, 236749, 1473, 107, 140, 584, 538, 655, 236743, 236778, 236787, 107, 144, 2060, 538, 107, 140, 2060, 10779, 236769, 236749, 236772, 236770, 236768, 900, 10779, 236769, 236749, 236772, 236778, 236768, 107]),
        ("<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n",
         [105, 2364, 107, 10979, 236888, 106, 107, 105, 4368, 107]),
        ("x\u{301}\u{301}y \u{a0}\u{a0}z\u{1c}",
         [236781, 238288, 238288, 236762, 236743, 432, 398, 432, 398, 236802, 266]),
        ("١٢٣ Ⅷ ½ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦀",
         [240929, 241303, 242044, 236743, 251329, 47041, 236743, 478, 395, 386, 390, 478, 395, 386, 409, 254865, 478, 395, 386, 398, 255458, 478, 395, 386, 399, 478, 395, 386, 400, 236743, 248714]),
        ("SparKV prunes key channels per token.",
         [167904, 57137, 865, 11664, 2307, 13199, 810, 8369, 236761])
    ]

    @Test(arguments: 0..<llamaCppReference.count)
    func encodesLikeLlamaCpp(index: Int) throws {
        let t = try KnownModelFixture.requireGemmaTokenizer()
        let (text, expected) = Self.llamaCppReference[index]
        #expect(t.encode(text) == expected)
        #expect(try t.decodeBytes(expected) == Array(text.utf8))
    }

    /// Gemma's prompts start with <bos> (`tokenizer.ggml.add_bos_token`).
    @Test func addsBOSAndEndsAtEOSOrEndOfTurn() throws {
        let t = try KnownModelFixture.requireGemmaTokenizer()
        #expect(t.vocabularySize == 262_144 && t.addBOS && t.bosID == 2 && t.eosID == 1)
        #expect(t.encode("Hello world", addSpecial: true) == [2, 9259, 1902])
        #expect(t.isEndOfGeneration(1) && t.isEndOfGeneration(106) && !t.isEndOfGeneration(105))
        #expect(try t.decode([2, 9259, 1902], skipSpecial: true) == "Hello world")
        #expect(t.unencodableBytes.isEmpty)
    }

    @Test func scoresMustMatchTheVocabulary() {
        let error = thrownError(TokenizerError.self) {
            _ = try Tokenizer(tokens: ["a", "b"], tokenTypes: nil, merges: [], preTokenizer: nil, sentencePieceScores: [0])
        }
        #expect(error == .invalidVocabulary("1 scores for 2 tokens"))
    }
}
