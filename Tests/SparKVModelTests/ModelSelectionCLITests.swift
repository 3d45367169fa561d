import Foundation
import Testing

@testable import SparKVModel

// Issue 13: `--model NAME|PATH` in the model commands; Qwen answers a chat question, Gemma
// continues a prompt.

@Suite("CLI: --model selects a known model by name or a file by path")
struct ModelSelectionCLITests {
    @Test func qwenAnswersTheIssuesQuestion() throws {
        _ = try KnownModelFixture.requireFile(.qwen25Coder1_5B)
        let outcome = try SparKVExecutable.run(
            ["generate", "--model", "qwen2.5-coder-1.5b", "--chat", "--prompt", "What is the capital of France?",
             "--max-tokens", "16"], timeout: 300)
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(outcome.stdout.contains("Paris"), "\(outcome.stdout)")
    }

    @Test func gemmaContinuesAPromptAndChats() throws {
        _ = try KnownModelFixture.requireFile(.gemma3_270M)
        let plain = try SparKVExecutable.run(["generate", "--model", "gemma-3-270m", "--prompt", "The capital of France is",
                                              "--max-tokens", "8"], timeout: 120)
        #expect(plain.status == 0 && !plain.stdout.isEmpty, "\(plain.stderr)")
        let chat = try SparKVExecutable.run(["generate", "--model", "gemma-3-270m", "--chat", "--prompt", "Hi",
                                             "--max-tokens", "4"], timeout: 120)
        #expect(chat.status == 0, "\(chat.stderr)")
    }

    @Test func aPathIsUsedAsIs() throws {
        let path = try KnownModel.gemma3_270M.locate()
        _ = try KnownModelFixture.requireFile(.gemma3_270M)
        let outcome = try SparKVExecutable.run(["generate", "--model", path, "--prompt", "Hello", "--max-tokens", "2"], timeout: 120)
        #expect(outcome.status == 0, "\(outcome.stderr)")
    }

    /// A value that is neither a known name nor a file is a usage error naming it.
    @Test func anUnknownNameIsAMissingFile() throws {
        let outcome = try SparKVExecutable.run(["generate", "--model", "qwen3-0.6b", "--prompt", "Hi"])
        #expect(outcome.status != 0 && outcome.stderr.contains("--model") && outcome.stderr.contains("qwen3-0.6b"),
                "\(outcome.stderr)")
    }

    @Test func aKnownNameResolvesToItsFileInModels() throws {
        for model in KnownModel.allCases {
            let path = try model.locate()
            #expect(path.hasSuffix("/models/" + model.fileName))
        }
        // A file named by SPARKV_MODEL is another model than the one asked for by name.
        let elsewhere = try KnownModel.gemma3_270M.locate(environmentValue: "/nonexistent/file.gguf")
        #expect(elsewhere.hasSuffix("/models/gemma-3-270m-q4_k_m.gguf"))
        let error = thrownError(GGUFError.self) { _ = try ModelFiles.locate("missing.gguf", fetchName: "gemma-3-270m") }
        #expect(error?.description.contains("scripts/fetch-model.sh gemma-3-270m") == true)
    }
}
