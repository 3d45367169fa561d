import Foundation
import Testing

@testable import SparKVModel

extension KnownModelFixture {
    /// Qwen2.5-Coder's tokenizer, built once.
    static let qwenTokenizer: Result<Tokenizer, any Error> = qwen.flatMap { file in Result { try Tokenizer(gguf: file) } }

    /// The tokenizer; fails the calling test when the model is missing.
    static func requireQwenTokenizer(sourceLocation: SourceLocation = #_sourceLocation) throws -> Tokenizer {
        _ = try requireFile(.qwen25Coder1_5B, sourceLocation: sourceLocation)
        return try qwenTokenizer.get()
    }
}

// Issue 13: the qwen2 BPE pre-tokenizer, ChatML and the end-of-turn tokens of Qwen2.5.

@Suite("Tokenizer: qwen2 (Qwen2.5-Coder-1.5B-Instruct)")
struct Qwen2TokenizerTests {
    /// Expected ids from llama.cpp: llama-cpp-python 0.3.36 (pip, in a throwaway venv, built with
    /// CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON"),
    /// `Llama(model_path=<this GGUF>, vocab_only=True).tokenize(s.encode(), add_bos=False, special=True)`;
    /// each also detokenized back to its string there. They pin the qwen2 regex's differences from
    /// SmolLM2's: one digit per word (also Arabic-Indic digits and Ⅷ), contractions in any case, a
    /// letter run taking one leading punctuation mark ("'quoted"), newlines kept with the
    /// punctuation before them, whitespace runs cut after their last newline.
    static let llamaCppReference: [(String, [Int])] = [
        ("Hello world",
         [9707, 1879]),
        ("What is the capital of France?",
         [3838, 374, 279, 6722, 315, 9625, 30]),
        ("The quick brown fox jumps over the lazy dog.",
         [785, 3974, 13876, 38835, 34208, 916, 279, 15678, 5562, 13]),
        ("I'm sure they'll say it's fine, don't you think? We've seen it.",
         [40, 2776, 2704, 807, 3278, 1977, 432, 594, 6915, 11, 1513, 944, 498, 1744, 30, 1205, 3003, 3884, 432, 13]),
        ("I'M HERE, YOU'RE there, they'LL see; 'quoted' 'S",
         [40, 27603, 19249, 11, 14985, 94153, 1052, 11, 807, 6, 4086, 1490, 26, 364, 63725, 6, 364, 50]),
        ("Numbers 12345 and 3.14159 and 1,000,000",
         [27237, 220, 16, 17, 18, 19, 20, 323, 220, 18, 13, 16, 19, 16, 20, 24, 323, 220, 16, 11, 15, 15, 15, 11, 15, 15, 15]),
        ("  leading and trailing spaces  ",
         [220, 6388, 323, 27748, 12621, 256]),
        ("tabs\tand\nnewlines\r\nmixed",
         [30993, 52477, 198, 931, 7969, 319, 56685]),
        ("\n\n\n   \n",
         [1406, 5872]),
        ("a \n\n b\t\t\n c   d",
         [64, 4710, 293, 2394, 272, 256, 294]),
        ("Café naïve résumé façade Ångström",
         [34, 2577, 963, 94880, 586, 9333, 1242, 963, 94872, 1021, 79252, 968, 495, 85584]),
        ("Россия и Україна",
         [33504, 22787, 2247, 39131, 7587, 127872, 144031, 14191]),
        ("你好，世界！",
         [108386, 3837, 99489, 6313]),
        ("日本語のテキスト",
         [101059, 102819, 15767, 56833, 61803, 70534]),
        ("Emoji: 😀👍🏽🇺🇸 and ❤\u{fe0f}",
         [92731, 25, 90316, 144349, 145375, 145526, 145383, 323, 70470, 30543]),
        ("def foo(x):\n    return x ** 2  # comment",
         [750, 15229, 2075, 982, 262, 470, 856, 3070, 220, 17, 220, 671, 3980]),
        ("def fib(n):\n    if n < 2:\n        return n\n    return fib(n-1) + fib(n-2)\n",
         [750, 15801, 1445, 982, 262, 421, 308, 366, 220, 17, 510, 286, 470, 308, 198, 262, 470, 15801, 1445, 12, 16, 8, 488, 15801, 1445, 12, 17, 340]),
        ("x=[1,2,3];\r\nfor(i=0;i<10;i++){}\r\n",
         [87, 5818, 16, 11, 17, 11, 18, 5960, 1958, 1956, 28, 15, 4696, 27, 16, 15, 4696, 45033, 1771]),
        ("#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
         [1067, 366, 10345, 860, 397, 396, 1887, 4333, 8, 314, 4100, 4430, 67, 1699, 497, 220, 19, 17, 1215, 335]),
        ("<|im_start|>user\nHi!<|im_end|>\n",
         [151644, 872, 198, 13048, 0, 151645, 198]),
        ("a<|endoftext|>b<|im_end|><|im_start|>",
         [64, 151643, 65, 151645, 151644]),
        ("x\u{301}\u{301}y \u{a0}\u{a0}z\u{1c}",
         [87, 53839, 53839, 88, 17091, 4102, 89, 216]),
        ("١٢٣ Ⅷ ½",
         [149, 94, 149, 95, 149, 96, 220, 70467, 100, 220, 26062]),
        ("...!!!???\n\n---",
         [1112, 12069, 94521, 4421]),
        ("SparKV prunes key channels per token.",
         [50, 1732, 82707, 548, 8531, 1376, 11744, 817, 3950, 13])
    ]

    @Test(arguments: 0..<llamaCppReference.count)
    func encodesLikeLlamaCpp(index: Int) throws {
        let t = try KnownModelFixture.requireQwenTokenizer()
        let (text, expected) = Self.llamaCppReference[index]
        #expect(t.encode(text) == expected)
        #expect(try t.decodeBytes(expected) == Array(text.utf8))
    }

    @Test func vocabularyAndSpecialTokens() throws {
        let t = try KnownModelFixture.requireQwenTokenizer()
        #expect(t.vocabularySize == 151_936 && t.preTokenizerName == "qwen2" && !t.addBOS)
        #expect(t.tokenID("<|im_start|>") == 151_644 && t.tokenID("<|im_end|>") == 151_645)
        #expect(t.tokenID("<|endoftext|>") == 151_643)
        #expect(t.eosID == 151_645 && t.bosID == 151_643)
    }

    /// Generation stops at the end of a turn and at the end of a text.
    @Test func imEndAndEndOfTextEndGeneration() throws {
        let t = try KnownModelFixture.requireQwenTokenizer()
        #expect(t.isEndOfGeneration(151_645) && t.isEndOfGeneration(151_643))
        #expect(!t.isEndOfGeneration(151_644) && !t.isEndOfGeneration(9707))
    }

    /// The ChatML prompt as Qwen's template renders it for one user message: its default system
    /// message (the literal after the template's tools branch), the turn, the assistant's opening.
    @Test func chatMLPromptWithQwensDefaultSystemMessage() throws {
        let t = try KnownModelFixture.requireQwenTokenizer()
        #expect(t.defaultSystemPrompt == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        let prompt = t.chatPrompt(user: "What is the capital of France?")
        #expect(prompt == "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
        let ids = t.encode(prompt)
        #expect(ids.first == 151_644 && ids.suffix(3) == [151_644, 77091, 198])
        #expect(ids.filter { $0 == 151_645 }.count == 2)
    }
}
