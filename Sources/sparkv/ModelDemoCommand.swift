import ArgumentParser
import Foundation
import SparKV
import SparKVModel

/// `sparkv model-demo`: the README's main job — one long prompt through dense, SnapKV and
/// SnapKV + SparK caches of the real model.
struct ModelDemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model-demo",
        abstract: "Run one long prompt through dense, SnapKV and SnapKV+SparK caches of a real model (SmolLM2-135M by default).",
        discussion: """
            The prompt (the start of --text, then a question about it, in the chat template) is prefilled \
            densely once; each policy's cache is built from that prefill and decodes --max-tokens greedy tokens. \
            Prints, per policy, the KV bytes held against dense fp16, decode tokens/s, how far the completion \
            agrees with the dense cache's (tokens equal up to the first divergence, and overall), and the KL and \
            top-1 agreement of the next-token distributions on the dense completion. An explanation follows the table.
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

    @Option(name: .long, help: ModelArguments.modelHelp)
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
        var policies = try self.policies.map { try ModelArguments.parsePolicy($0, flag: "--policies") }
        if let threads {
            try LlamaModel.setThreads(threads)
            for i in policies.indices { policies[i].threads = threads }
        }
        let llama = try ModelArguments.openModel(model)
        for p in policies { _ = try ModelArguments.parsePolicy(p.description, flag: "--policies", headDim: llama.config.headDim) }
        let tokenizer = try Tokenizer(gguf: llama.file)
        let source = try ModelArguments.readText(text, flag: "--text")
        let ids = tokenizer.encode(source, addSpecial: false)
        let context = (try? tokenizer.decode(Array(ids.prefix(contextTokens)))) ?? source
        let prompt = tokenizer.chatPrompt(user: context + "\n\n" + question)
        let tokens = tokenizer.encode(prompt, addSpecial: false)
        try ModelArguments.checkLength(promptTokens: tokens.count, maxTokens: maxTokens, config: llama.config)
        policies = policies.map { ModelArguments.fitEviction($0, promptTokens: tokens.count, flag: "--policies") }

        var progress = Progress(task: "model-demo", total: 1 + policies.count)
        progress.report(done: 0, detail: "dense prefill of \(tokens.count) tokens")
        let clock = ContinuousClock()
        let t0 = clock.now
        let state = try llama.prefill(tokens: tokens, window: policies.map(\.window).max() ?? 32)
        let prefillSeconds = seconds(clock.now - t0)
        let title = "SparKV model demo: \(llama.displayName), prompt \(tokens.count) tokens "
            + "(\(Int(Double(tokens.count) / prefillSeconds)) tokens/s dense prefill), \(maxTokens) greedy tokens per policy\n"

        var reference: [Int] = []
        var referenceLogProbs: [[Float]] = []   // the first policy's next-token log-probabilities, per step
        var rows: [[String]] = []
        var completions: [(String, String)] = []
        for (i, policy) in policies.enumerated() {
            progress.report(done: 1 + i, detail: "\(policy): compress, decode \(maxTokens) tokens")
            let session = try LlamaSession(model: llama, policy: policy, capacity: tokens.count + maxTokens + 1)
            let t1 = clock.now
            var logits = Array(try session.load(state))
            let loadSeconds = seconds(clock.now - t1)
            let memory = try session.cache.memoryReport()
            var out: [Int] = []
            let t2 = clock.now
            while out.count < maxTokens {
                if i == 0 { referenceLogProbs.append(logSoftmax(logits)) }
                let next = LlamaSession.greedy(logits)
                out.append(next)
                if out.count == maxTokens || tokenizer.isEndOfGeneration(next) { break }
                logits = try session.step(token: next)
            }
            let decodeSeconds = seconds(clock.now - t2)
            if i == 0 { reference = out }
            let prefix = zip(out, reference).prefix { $0 == $1 }.count
            let overall = zip(out, reference).filter { $0 == $1 }.count
            // Free-running completions part at the first different token and are not comparable
            // after it; the KL and top-1 columns feed this policy the first policy's own tokens, so
            // every position compares the two next-token distributions on the same text.
            var kl = 0.0, top1 = 0
            if i > 0, !reference.isEmpty {
                let forced = try LlamaSession(model: llama, policy: policy, capacity: tokens.count + maxTokens + 1)
                var logits = Array(try forced.load(state))
                for (t, token) in reference.enumerated() {
                    let lp = logSoftmax(logits)
                    kl += klDivergence(referenceLogProbs[t], lp)
                    if LlamaSession.greedy(logits) == reference[t] { top1 += 1 }
                    if t + 1 < reference.count { logits = try forced.step(token: token) }
                }
                kl /= Double(reference.count)
            } else { top1 = reference.count }
            rows.append([policy.description, "\(memory.totalBytes)", String(format: "%.1f%%", 100 * memory.ratioToDense),
                         String(format: "%.0f", 1000 * loadSeconds),
                         String(format: "%.1f", Double(max(out.count - 1, 1)) / decodeSeconds),
                         "\(prefix)/\(reference.count)", "\(overall)/\(reference.count)",
                         String(format: "%.4f", kl), "\(top1)/\(reference.count)"])
            completions.append((policy.description, (try? tokenizer.decode(out, skipSpecial: true)) ?? ""))
        }
        progress.finish()
        // Printed at the end, so that a terminal's progress line never lands inside the output.
        print(title)
        let header = ["policy", "KV bytes", "of dense", "compress ms", "decode tok/s", "agree (prefix)", "agree (all)", "KL", "top-1"]
        print(textTable([header] + rows))
        print("\n" + Self.explanation(tokens: maxTokens, reference: policies.first?.description ?? "dense") + "\n")
        for (p, c) in completions { print("[\(p)] \(c.replacingOccurrences(of: "\n", with: " "))") }
    }

    /// How to read the table, printed under it.
    static func explanation(tokens: Int, reference: String) -> String {
        """
        How to read this (each row against the first, \(reference)):
          agree (prefix)  greedy tokens equal to the \(reference) cache's before the first difference. One
                          different token (a synonym, a comma) sends the rest of the text elsewhere, so
                          a short prefix can be a harmless rewording: compare the completions below.
          agree (all)     of the \(tokens) tokens, those equal to \(reference)'s at the same position.
          KL              mean KL(\(reference) || policy) in nats of the next-token distributions, with
                          both fed \(reference)'s tokens so every position compares the same text;
                          0 = identical; the larger, the more the policy changes what comes next.
          top-1           positions (same text) where the policy's most likely token is \(reference)'s.
        Why eviction loses information: SnapKV keeps the prompt tokens that the question's last queries
        attended to most and deletes the others for good, so a detail the prefill did not look at (a
        passkey, a name) cannot be recovered when a later token needs it. SparK keeps every token and
        drops only the key channels that matter least to the query, restoring their average
        contribution, so such a detail is blurred a little rather than gone. A policy with snapkv(...)
        evicts whatever it adds (snapkv+spark prunes the tokens SnapKV kept); spark(...) alone keeps
        every token: try --policies dense snapkv(512) spark(0.8).
        """
    }
}

/// Log-softmax in Double (logits of a 49k vocabulary overflow a naive Float softmax).
private func logSoftmax(_ x: [Float]) -> [Float] {
    let m = Double(x.max() ?? 0)
    let logSum = log(x.reduce(0.0) { $0 + exp(Double($1) - m) }) + m
    return x.map { Float(Double($0) - logSum) }
}

/// KL(p || q) of two log-probability vectors.
private func klDivergence(_ logP: [Float], _ logQ: [Float]) -> Double {
    zip(logP, logQ).reduce(0.0) { $0 + exp(Double($1.0)) * Double($1.0 - $1.1) }
}
