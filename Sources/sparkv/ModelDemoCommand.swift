import ArgumentParser
import Foundation
import SparKV
import SparKVModel

/// `sparkv model-demo`: the README's main job — one long prompt through dense, SnapKV and
/// SnapKV + SparK caches of the real model.
struct ModelDemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model-demo",
        abstract: "Run one long prompt through dense, SnapKV and SnapKV+SparK caches of SmolLM2-135M.",
        discussion: """
            The prompt (the start of --text, then a question about it, in the chat template) is prefilled \
            densely once; each policy's cache is built from that prefill and decodes --max-tokens greedy tokens. \
            Prints, per policy, the KV bytes held against dense fp16, decode tokens/s, and how far the completion \
            agrees with the dense cache's (tokens equal up to the first divergence, and overall).
            """
    )

    @Option(name: .long, help: "Text the prompt starts with.")
    var text: String = "/usr/share/common-licenses/GPL-3"

    @Option(name: .long, help: "Tokens of --text in the prompt.")
    var contextTokens: Int = 2048

    @Option(name: .long, help: "The question asked after the text.")
    var question: String = "What is the name of this license, and who publishes it?"

    @Option(name: .long, parsing: .upToNextOption, help: "Policies (compact form).")
    var policies: [String] = ["dense", "snapkv(512)", "snapkv(512)+spark(0.8)"]

    @Option(name: .long, help: "Greedy tokens per policy.")
    var maxTokens: Int = 48

    @Option(name: .long, help: "Path of the GGUF model (default: $SPARKV_MODEL or models/).")
    var model: String?

    @Option(name: .long, help: "Threads (default: OpenMP's).")
    var threads: Int?

    func validate() throws {
        guard contextTokens >= 0 else { throw ValidationError("--context-tokens must be >= 0") }
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must be >= 0") }
        try ModelArguments.validateThreads(threads)
    }

    func run() throws { try runReportingUsage(execute) }

    private func execute() throws {
        var policies = try self.policies.map { try CompressionPolicy(parsing: $0) }
        if let threads {
            try LlamaModel.setThreads(threads)
            for i in policies.indices { policies[i].threads = threads }
        }
        let llama = try ModelArguments.openModel(model)
        let tokenizer = try Tokenizer(gguf: llama.file)
        let source = try ModelArguments.readText(text, flag: "--text")
        let ids = tokenizer.encode(source, addSpecial: false)
        let context = (try? tokenizer.decode(Array(ids.prefix(contextTokens)))) ?? source
        let prompt = tokenizer.chatPrompt(user: context + "\n\n" + question)
        let tokens = tokenizer.encode(prompt, addSpecial: false)
        try ModelArguments.checkLength(promptTokens: tokens.count, maxTokens: maxTokens, config: llama.config)

        let clock = ContinuousClock()
        let t0 = clock.now
        let state = try llama.prefill(tokens: tokens, window: policies.map(\.window).max() ?? 32)
        let prefillSeconds = seconds(clock.now - t0)
        print("SparKV model demo: SmolLM2-135M-Instruct (Q4_1), prompt \(tokens.count) tokens "
              + "(\(Int(Double(tokens.count) / prefillSeconds)) tokens/s dense prefill), \(maxTokens) greedy tokens per policy\n")

        var reference: [Int] = []
        var rows: [[String]] = []
        var completions: [(String, String)] = []
        for (i, policy) in policies.enumerated() {
            let session = try LlamaSession(model: llama, policy: policy, capacity: tokens.count + maxTokens + 1)
            let t1 = clock.now
            var logits = Array(try session.load(state))
            let loadSeconds = seconds(clock.now - t1)
            let memory = try session.cache.memoryReport()
            var out: [Int] = []
            let t2 = clock.now
            while out.count < maxTokens {
                let next = LlamaSession.greedy(logits)
                out.append(next)
                if out.count == maxTokens || tokenizer.isEndOfGeneration(next) { break }
                logits = try session.step(token: next)
            }
            let decodeSeconds = seconds(clock.now - t2)
            if i == 0 { reference = out }
            let prefix = zip(out, reference).prefix { $0 == $1 }.count
            let overall = zip(out, reference).filter { $0 == $1 }.count
            rows.append([policy.description, "\(memory.totalBytes)", String(format: "%.1f%%", 100 * memory.ratioToDense),
                         String(format: "%.0f", 1000 * loadSeconds),
                         String(format: "%.1f", Double(max(out.count - 1, 1)) / decodeSeconds),
                         "\(prefix)/\(reference.count)", "\(overall)/\(reference.count)"])
            completions.append((policy.description, (try? tokenizer.decode(out, skipSpecial: true)) ?? ""))
        }
        let header = ["policy", "KV bytes", "of dense", "compress ms", "decode tok/s", "agree (prefix)", "agree (all)"]
        print(textTable([header] + rows))
        print("\nagree: generated tokens equal to the dense cache's, up to the first divergence / overall.\n")
        for (p, c) in completions { print("[\(p)] \(c.replacingOccurrences(of: "\n", with: " "))") }
    }
}
