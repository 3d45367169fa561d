import ArgumentParser
import Foundation
import SparKV
import SparKVModel
import CSparKVModel

/// `sparkv generate`: generation with a real model on a SparKV cache under any policy — one
/// prompt, or an interactive chat — streamed to stdout token by token.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text with a real model (SmolLM2-135M-Instruct by default) on a compressed KV cache.",
        discussion: """
            The prompt is prefilled densely once, its keys/values are compressed into a SparKV cache under \
            --policy, and the completion is decoded from that cache and printed to stdout as it is decoded. \
            Decoding is greedy unless --temperature > 0 (then --top-k, --top-p and --seed apply; the same seed \
            gives the same text). Prefill and decode tokens/s and the KV bytes held against a dense fp16 cache \
            go to stderr (or, with --json, everything to stdout at the end). --model names a model \
            (\(KnownModel.names); fetch it with scripts/fetch-model.sh NAME) or a GGUF path; without it \
            the model is looked up in $SPARKV_MODEL, then models/ (SmolLM2-135M-Instruct).

            With --chat the prompt is a user turn of the model's chat template (after --system, or the \
            template's default system prompt). --chat without --prompt or --prompt-file is an interactive chat: \
            each line of stdin is a user turn, answered on the same cache, until end of input (Ctrl-D).

            Policy grammar:
            \(CompressionPolicy.compactGrammar)
            """
    )

    @Option(name: .long, help: "Compression policy (compact form, e.g. snapkv:512+spark:0.8).")
    var policy: String = "dense"

    @Option(name: .long, help: "Read the prompt from this file ('-': standard input).")
    var promptFile: String?

    @Option(name: .long, help: "The prompt text (instead of --prompt-file).")
    var prompt: String?

    @Flag(name: .long, help: "Use the model's chat template; without a prompt, chat interactively on stdin.")
    var chat = false

    @Option(name: .long, help: "System prompt of the chat template (with --chat; default: the template's own).")
    var system: String?

    @Option(name: .long, help: "Maximum tokens to generate (per turn with --chat).")
    var maxTokens: Int = 64

    @Option(name: .long, help: "Sampling temperature; 0 = greedy.")
    var temperature: Float = 0

    @Option(name: .long, help: "Sample from the K most likely tokens only; 0 = all.")
    var topK: Int = 0

    @Option(name: .long, help: "Sample from the most likely tokens holding this probability mass, in (0, 1].")
    var topP: Float = 1

    @Option(name: .long, help: "Seed of the sampling (same seed, same output).")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Stop when the text contains this string (not printed; repeatable).")
    var stop: [String] = []

    @Option(name: .long, help: ModelArguments.modelHelp)
    var model: String?

    @Option(name: .long, help: "Threads of the model kernels and the cache, 1...1024 (default: OpenMP's).")
    var threads: Int?

    @Flag(name: .long, help: "Exact (float-activation) matmuls instead of llama.cpp-style 8-bit activations (slower).")
    var exactMatmul = false

    @Flag(name: .long, help: "Print a JSON summary at the end instead of streaming text.")
    var json = false

    @Option(name: .long, help: "Save the compressed prompt cache to this file, for --load-prefix (not with --chat).")
    var savePrefix: String?

    @Option(name: .long, help: ArgumentHelp(
        "Start from a prompt cache saved with --save-prefix instead of prefilling (not with --chat).",
        discussion: "The prompt is then the text that follows the saved one; the saved policy applies."))
    var loadPrefix: String?

    /// Interactive: --chat with no prompt given.
    private var interactive: Bool { chat && prompt == nil && promptFile == nil }

    func validate() throws {
        guard prompt == nil || promptFile == nil else { throw ValidationError("give --prompt or --prompt-file, not both") }
        guard prompt != nil || promptFile != nil || chat else {
            throw ValidationError("missing prompt: give --prompt <text>, --prompt-file <path> ('-' reads stdin), "
                                  + "or --chat for an interactive chat")
        }
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens \(maxTokens): must be >= 0") }
        guard temperature.isFinite, temperature >= 0 else {
            throw ValidationError("--temperature \(temperature): must be a finite number >= 0 (0 = greedy)")
        }
        guard topK >= 0 else { throw ValidationError("--top-k \(topK): must be >= 0 (0 = all tokens)") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p \(topP): must be in (0, 1] (1 = all tokens)") }
        guard system == nil || chat else {
            throw ValidationError("--system: the system prompt belongs to the chat template; add --chat")
        }
        guard !stop.contains("") else { throw ValidationError("--stop: the stop string is empty") }
        guard !(json && interactive) else { throw ValidationError("--json: needs one prompt (--prompt or --prompt-file), not an interactive --chat") }
        try ModelArguments.validateThreads(threads)
        try ModelArguments.validatePolicy(policy)
        try validatePrefixOptions()
    }

    func run() throws { try runReportingUsage(execute) }

    private func execute() throws {
        var policy = try ModelArguments.parsePolicy(self.policy)
        if let threads { policy.threads = threads; try LlamaModel.setThreads(threads) }
        var sampler = try Sampler(temperature: temperature, topK: topK, topP: topP, seed: seed)

        let llama = try ModelArguments.openModel(model)
        llama.exactMatmul = exactMatmul
        _ = try ModelArguments.parsePolicy(self.policy, headDim: llama.config.headDim)   // values vs the model
        let tokenizer = try Tokenizer(gguf: llama.file)
        if chat && tokenizer.chatFormat == nil {
            throw ValidationError("--chat: the model's vocabulary has no chat turn markers (<|im_start|> or <start_of_turn>)")
        }
        if interactive {
            try chatLoop(llama: llama, tokenizer: tokenizer, policy: policy, sampler: &sampler)
            return
        }
        let text: String
        if let prompt { text = prompt }
        else if let promptFile { text = try ModelArguments.readPrompt(promptFile, flag: "--prompt-file") }
        else { throw ValidationError("missing prompt: give --prompt or --prompt-file") }
        let promptText = chat ? tokenizer.chatPrompt(user: text, system: system) : text
        let tokens = tokenizer.encode(promptText, addSpecial: !chat)
        guard !tokens.isEmpty else { throw ValidationError("--prompt: the prompt encodes to no tokens") }
        try ModelArguments.checkLength(promptTokens: tokens.count, maxTokens: maxTokens, config: llama.config)
        if ProcessInfo.processInfo.environment["SPARKV_DEBUG_TOKENS"] != nil {
            printError("prompt: \(promptText.debugDescription)\ntokens: \(tokens)")
        }

        let clock = ContinuousClock()
        let t0 = clock.now
        let session: LlamaSession, logits: [Float]
        if let loadPrefix {
            (session, logits) = try resumePrefix(loadPrefix, llama: llama, tokens: tokenizer.encode(text, addSpecial: false))
            policy = session.cache.policy
        } else {
            policy = ModelArguments.fitEviction(policy, promptTokens: tokens.count)
            let state = try Self.prefill(llama, tokens: tokens, window: policy.window)
            session = try LlamaSession(model: llama, policy: policy, capacity: tokens.count + maxTokens + 1)
            logits = Array(try session.load(state))
            if let savePrefix { try saveCache(session.cache, to: savePrefix) }
        }
        let prefillTime = clock.now - t0

        let t1 = clock.now
        let turn = try decode(session: session, logits: logits, tokenizer: tokenizer, sampler: &sampler, echo: !json)
        let decodeTime = clock.now - t1
        let report = try session.cache.memoryReport()
        let prefillSeconds = seconds(prefillTime), decodeSeconds = seconds(decodeTime)
        let decodeSteps = max(turn.tokens.count - 1, 0) // the first token comes from the prefill's logits
        let summary = GenerateSummary(
            policy: policy.description, promptTokens: tokens.count, generatedTokens: turn.tokens.count,
            completion: turn.text, prefillTokensPerSecond: Double(tokens.count) / prefillSeconds,
            decodeTokensPerSecond: decodeSteps > 0 ? Double(decodeSteps) / decodeSeconds : 0,
            kvBytes: report.totalBytes, denseBytes: report.denseBytes, ratioToDense: report.ratioToDense,
            threads: session.cache.threadCount,
            kernel: "cache \(session.cache.kernel.name), model \(String(cString: svm_isa_name(svm_get_isa())))",
            temperature: temperature, topK: topK, topP: topP, seed: seed, stopped: turn.stopped)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            writeOut("\n")
            // Statistics on stderr: stdout holds only the completion, so it can be piped.
            printError("""

                policy \(summary.policy): prompt \(summary.promptTokens) tokens, generated \(summary.generatedTokens)\
                \(turn.stopped ? " (ended at a --stop string)" : "")
                prefill \(fmt(summary.prefillTokensPerSecond)) tokens/s, decode \(fmt(summary.decodeTokensPerSecond)) tokens/s \
                (\(summary.threads) threads; kernels: \(summary.kernel))
                KV cache: \(summary.kvBytes) bytes = \(fmt(100 * summary.ratioToDense))% of dense fp16 (\(summary.denseBytes) bytes)\
                \(slidingNote(session))
                """)
        }
    }

    /// The sliding-window layers' bytes, which the cache's report leaves out ("" without them).
    private func slidingNote(_ session: LlamaSession) -> String {
        let bytes = session.slidingWindowBytes
        guard bytes > 0 else { return "" }
        let slides = (0..<session.model.config.layers).filter(session.model.config.architecture.isSlidingWindow).count
        return "; plus \(bytes) bytes of dense float32 windows in the \(slides) sliding-window layers"
    }

    /// One decoded turn: its tokens (the last one not yet run through the model), its text, and
    /// whether a stop string ended it.
    struct Turn {
        var tokens: [Int]
        var text: String
        var stopped: Bool
    }

    /// Samples up to --max-tokens tokens from `logits` on, streaming the text to stdout when `echo`.
    private func decode(session: LlamaSession, logits first: [Float], tokenizer: Tokenizer,
                        sampler: inout Sampler, echo: Bool) throws -> Turn {
        var stream = TextStream(tokenizer: tokenizer, stops: stop)
        var logits = first
        var generated: [Int] = []
        while generated.count < maxTokens {
            let next = sampler.next(logits)
            generated.append(next)
            let piece = stream.push(next)
            if echo { writeOut(piece) }
            if stream.stopped || tokenizer.isEndOfGeneration(next) || generated.count == maxTokens { break }
            logits = try session.step(token: next)
        }
        let rest = stream.finish()
        if echo { writeOut(rest) }
        return Turn(tokens: generated, text: stream.text, stopped: stream.stopped)
    }

    /// The dense prefill, with a progress line on stderr when the prompt is long enough to take a while.
    static func prefill(_ llama: LlamaModel, tokens: [Int], window: Int) throws -> PromptState {
        // Progress by layer: done/total, elapsed and an estimate from the layers done so far.
        guard tokens.count >= 2048 else { return try llama.prefill(tokens: tokens, window: window) }
        let layers = llama.config.layers
        var progress = Progress(task: "generate", total: layers)
        progress.report(done: 0, detail: "dense prefill of \(tokens.count) tokens, by layer")
        defer { progress.finish() }
        return try llama.prefill(tokens: tokens, window: window) { done in
            progress.report(done: done, detail: "dense prefill of \(tokens.count) tokens, by layer")
        }
    }

    /// `--chat` without a prompt: each stdin line is a user turn; the conversation stays in one
    /// cache (the first turn is compressed under the policy, later tokens are appended to it).
    private func chatLoop(llama: LlamaModel, tokenizer: Tokenizer, policy: CompressionPolicy,
                          sampler: inout Sampler) throws {
        let tty = isatty(0) != 0 && isatty(2) != 0
        // The whole conversation must fit one cache: the model's context.
        let capacity = llama.config.contextLength + 1
        var session: LlamaSession?
        var pending: [Int] = []     // sampled tokens not yet run through the model
        let format = tokenizer.chatFormat ?? .chatML   // checked in execute()
        let endOfTurn = tokenizer.encode(format.endOfTurn, addSpecial: false, parseSpecial: true)
        if tty { printError("Chat with \(llama.displayName) (policy \(policy)); end with Ctrl-D.") }
        while true {
            if tty { FileHandle.standardError.write(Data("> ".utf8)) }
            guard let line = readLine(strippingNewline: true) else { break }
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
            var logits: [Float]
            if let session {
                var feed = pending
                if let last = pending.last, !tokenizer.isEndOfGeneration(last) { feed += endOfTurn }
                feed += tokenizer.encode(format.nextTurn(user: line), addSpecial: false, parseSpecial: true)
                guard session.position + feed.count + maxTokens < capacity else {
                    // Not a usage error: the conversation so far was fine; end it with what it said.
                    printError("sparkv generate: the conversation fills the model's context of "
                               + "\(llama.config.contextLength) tokens; it ends here")
                    break
                }
                logits = []
                for token in feed { logits = try session.step(token: token) }
            } else {
                let tokens = tokenizer.encode(tokenizer.chatPrompt(user: line, system: system),
                                              addSpecial: false, parseSpecial: true)
                try ModelArguments.checkLength(promptTokens: tokens.count, maxTokens: maxTokens, config: llama.config)
                let policy = ModelArguments.fitEviction(policy, promptTokens: tokens.count)
                let state = try Self.prefill(llama, tokens: tokens, window: policy.window)
                let s = try LlamaSession(model: llama, policy: policy, capacity: max(capacity, tokens.count + maxTokens + 1))
                logits = Array(try s.load(state))
                session = s
            }
            guard let session else { break }
            let turn = try decode(session: session, logits: logits, tokenizer: tokenizer, sampler: &sampler, echo: true)
            writeOut("\n")
            // The last sampled token has not been run yet; it opens the next turn's feed. (After a
            // --stop string, the model's context keeps the stop's tokens: they were generated.)
            pending = Array(turn.tokens.suffix(1))
        }
        if let session {
            let report = try session.cache.memoryReport()
            printError("conversation: \(session.position) tokens; KV cache \(report.totalBytes) bytes = "
                       + "\(fmt(100 * report.ratioToDense))% of dense fp16")
        }
    }
}

/// Writes to stdout at once: generated text is shown token by token, not when the buffer fills.
func writeOut(_ text: String) {
    guard !text.isEmpty else { return }
    print(text, terminator: "")
    fflush(nil)   // every stream: naming `stdout` is shared mutable state to Swift 6
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
    var temperature: Float
    var topK: Int
    var topP: Float
    var seed: UInt64
    /// True when a --stop string ended the completion.
    var stopped: Bool
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

private func fmt(_ x: Double) -> String { String(format: "%.1f", x) }
