import ArgumentParser
import Foundation
import SparKV
import SparKVModel
import CSparKVModel

/// `sparkv generate`: greedy generation with SmolLM2-135M on a SparKV cache under any policy.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text with the real model (SmolLM2-135M-Instruct) on a compressed KV cache.",
        discussion: """
            The prompt is prefilled densely once, its keys/values are compressed into a SparKV cache under \
            --policy, and the completion is decoded greedily from that cache. Prints the completion, prefill \
            and decode tokens/s, and the KV bytes held against a dense fp16 cache. The model is looked up in \
            $SPARKV_MODEL, then models/ (fetch it with scripts/fetch-model.sh).

            Policy grammar:
            \(CompressionPolicy.compactGrammar)
            """
    )

    @Option(name: .long, help: "Compression policy (compact form, e.g. snapkv:512+spark:0.8).")
    var policy: String = "dense"

    @Option(name: .long, help: "Read the prompt from this file.")
    var promptFile: String?

    @Option(name: .long, help: "The prompt text (instead of --prompt-file).")
    var prompt: String?

    @Flag(name: .long, help: "Wrap the prompt in the model's chat template (a user turn).")
    var chat = false

    @Option(name: .long, help: "Maximum tokens to generate.")
    var maxTokens: Int = 64

    @Option(name: .long, help: "Path of the GGUF model (default: $SPARKV_MODEL or models/).")
    var model: String?

    @Option(name: .long, help: "Threads of the model kernels and the cache, 1...1024 (default: OpenMP's).")
    var threads: Int?

    @Flag(name: .long, help: "Exact (float-activation) matmuls instead of llama.cpp-style 8-bit activations (slower).")
    var exactMatmul = false

    @Flag(name: .long, help: "Print a JSON summary instead of text.")
    var json = false

    func validate() throws {
        guard prompt != nil || promptFile != nil else { throw ValidationError("give --prompt-file or --prompt") }
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must be >= 0") }
        try ModelArguments.validateThreads(threads)
    }

    func run() throws { try runReportingUsage(execute) }

    private func execute() throws {
        let text: String
        if let prompt { text = prompt }
        else if let promptFile { text = try ModelArguments.readText(promptFile, flag: "--prompt-file") }
        else { throw ValidationError("give --prompt-file or --prompt") }
        var policy = try CompressionPolicy(parsing: self.policy)
        if let threads { policy.threads = threads; try LlamaModel.setThreads(threads) }

        let llama = try ModelArguments.openModel(model)
        llama.exactMatmul = exactMatmul
        let tokenizer = try Tokenizer(gguf: llama.file)
        let promptText = chat ? tokenizer.chatPrompt(user: text) : text
        let tokens = tokenizer.encode(promptText, addSpecial: !chat)
        guard !tokens.isEmpty else { throw ValidationError("the prompt encodes to no tokens") }
        try ModelArguments.checkLength(promptTokens: tokens.count, maxTokens: maxTokens, config: llama.config)
        if ProcessInfo.processInfo.environment["SPARKV_DEBUG_TOKENS"] != nil {
            printError("prompt: \(promptText.debugDescription)\ntokens: \(tokens)")
        }

        let clock = ContinuousClock()
        let t0 = clock.now
        let state = try llama.prefill(tokens: tokens, window: policy.window)
        let session = try LlamaSession(model: llama, policy: policy, capacity: tokens.count + maxTokens + 1)
        var logits = Array(try session.load(state))
        let prefillTime = clock.now - t0
        if ProcessInfo.processInfo.environment["SPARKV_DEBUG_TOKENS"] != nil {
            let top = logits.indices.sorted { logits[$0] > logits[$1] }.prefix(5)
            printError("top: " + top.map { "\($0) \((try? tokenizer.decode([$0])) ?? "?") \(logits[$0])" }.joined(separator: " | "))
        }

        var generated: [Int] = []
        let t1 = clock.now
        while generated.count < maxTokens {
            let next = LlamaSession.greedy(logits)
            generated.append(next)
            if tokenizer.isEndOfGeneration(next) { break }
            if generated.count == maxTokens { break }
            logits = try session.step(token: next)
        }
        let decodeTime = clock.now - t1
        let completion = (try? tokenizer.decode(generated, skipSpecial: true)) ?? ""
        let report = try session.cache.memoryReport()
        let prefillSeconds = seconds(prefillTime), decodeSeconds = seconds(decodeTime)
        let decodeSteps = max(generated.count - 1, 0) // the first token comes from the prefill's logits
        let summary = GenerateSummary(
            policy: policy.description, promptTokens: tokens.count, generatedTokens: generated.count,
            completion: completion, prefillTokensPerSecond: Double(tokens.count) / prefillSeconds,
            decodeTokensPerSecond: decodeSteps > 0 ? Double(decodeSteps) / decodeSeconds : 0,
            kvBytes: report.totalBytes, denseBytes: report.denseBytes, ratioToDense: report.ratioToDense,
            threads: session.cache.threadCount,
            kernel: "cache \(session.cache.kernel.name), model \(String(cString: svm_isa_name(svm_get_isa())))")
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            print(completion)
            print("""

                policy \(summary.policy): prompt \(summary.promptTokens) tokens, generated \(summary.generatedTokens)
                prefill \(fmt(summary.prefillTokensPerSecond)) tokens/s, decode \(fmt(summary.decodeTokensPerSecond)) tokens/s \
                (\(summary.threads) threads; kernels: \(summary.kernel))
                KV cache: \(summary.kvBytes) bytes = \(fmt(100 * summary.ratioToDense))% of dense fp16 (\(summary.denseBytes) bytes)
                """)
        }
    }
}

struct GenerateSummary: Codable {
    var policy: String
    var promptTokens: Int
    var generatedTokens: Int
    var completion: String
    var prefillTokensPerSecond: Double
    var decodeTokensPerSecond: Double
    var kvBytes: Int
    var denseBytes: Int
    var ratioToDense: Double
    var threads: Int
    var kernel: String
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

private func fmt(_ x: Double) -> String { String(format: "%.1f", x) }
