import Testing

@testable import SparKVModel

// Issue 13: chat templates for ChatML and Gemma, chosen from the vocabulary.

@Suite("Chat formats: ChatML and Gemma")
struct ChatFormatTests {
    @Test func gemmaWritesTurnsAfterBOSWithTheSystemMessageInTheFirstUserTurn() {
        let prompt = ChatFormat.gemma.render([.system("Be brief."), .user("Hi"), .assistant("Hello!"), .user("Bye")],
                                             defaultSystem: nil)
        #expect(prompt == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
            + "<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
        #expect(ChatFormat.gemma.nextTurn(user: "More") == "\n<start_of_turn>user\nMore<end_of_turn>\n<start_of_turn>model\n")
    }

    @Test func chatMLWritesEveryRoleAsATurn() {
        let prompt = ChatFormat.chatML.render([.user("Hi")], defaultSystem: "S")
        #expect(prompt == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        #expect(ChatFormat.chatML.render([], defaultSystem: "S", addGenerationPrompt: false).isEmpty)
    }

    @Test func theFormatFollowsTheVocabulary() throws {
        #expect(try KnownModelFixture.requireQwenTokenizer().chatFormat == .chatML)
        let gemma = try KnownModelFixture.requireGemmaTokenizer()
        #expect(gemma.chatFormat == .gemma)
        let ids = gemma.encode(gemma.chatPrompt(user: "Hi!"))
        // <bos> <start_of_turn> user \n Hi ! <end_of_turn> \n <start_of_turn> model \n
        #expect(ids == [2, 105, 2364, 107, 10979, 236888, 106, 107, 105, 4368, 107])
        let alphabet = (0..<256).map { String(Unicode.Scalar(ByteLevel.scalarForByte[$0])!) }
        #expect(try Tokenizer(tokens: alphabet, tokenTypes: nil, merges: [], preTokenizer: "gpt2").chatFormat == nil)
    }
}
