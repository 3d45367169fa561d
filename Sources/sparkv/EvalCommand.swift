import ArgumentParser
import Foundation
import SparKV
import SparKVModel

/// `sparkv eval`: the accuracy suite of the KV-cache policies on the real model.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Measure what each KV-cache policy costs in accuracy and bytes on a real model (SmolLM2-135M by default).",
        discussion: """
            Three protocols, the same prompts for every policy (each prompt is prefilled densely once and \
            its keys/values handed to every policy's cache):
              continuation  the first P tokens of --text go through the policy, the next --scored tokens are \
            read one by one and scored: mean NLL, its delta vs dense, top-1 agreement and KL(dense||policy);
              greedy        --greedy-tokens greedy tokens after the first P=min(--prefixes) tokens, compared \
            with dense (tokens up to the first divergence, and overall);
              passkey       a random 5-digit key at a random depth of filler text of each --passkey-lengths, \
            asked for at the end; --trials seeded trials per length.
            Bytes are the cache's after the longest prefix (K = key values, K meta = masks/signs/statistics, \
            V = values incl. value metadata), as % of a dense fp16 cache of the same tokens.
            """
    )

    @Option(name: .long, parsing: .upToNextOption, help: "Policies (compact form); default: the comparison table.")
    var policies: [String] = []

    @Option(name: .long, help: "Natural text for the continuation and greedy protocols.")
    var text: String = "/usr/share/common-licenses/GPL-3"

    @Option(name: .long, help: "Prefix lengths P (comma-separated); those the text cannot hold are skipped.")
    var prefixes: String = "1024,2048,4096"

    @Option(name: .long, help: "Tokens scored after each prefix.")
    var scored: Int = 256

    @Option(name: .long, help: "Greedy tokens compared with dense (0 skips the protocol).")
    var greedyTokens: Int = 64

    @Option(name: .long, help: "Passkey prompt lengths in tokens (comma-separated; empty skips).")
    var passkeyLengths: String = "1024,2048,4096,8192"

    @Option(name: .long, help: "Passkey trials per length.")
    var trials: Int = 20

    @Option(name: .long, help: "Seed of the passkey trials.")
    var seed: UInt64 = 1

    @Option(name: .long, help: ModelArguments.modelHelp)
    var model: String?

    @Option(name: .long, help: "Threads of the model kernels and caches (default: OpenMP's).")
    var threads: Int?

    @Option(name: .long, help: "Write every result as JSON to this file.")
    var json: String?

    @Option(name: .long, help: "Write the table as CSV to this file.")
    var csv: String?

    @Option(name: .long, help: "Write the bytes-vs-KL frontier (longest prefix) as an SVG plot to this file.")
    var plot: String?

    @Flag(name: .long, help: "A quick run: P=1024 only, 64 scored tokens, 16 greedy tokens, passkey 1024 x 4 trials.")
    var quick = false

    /// The default comparison table.
    static let defaultPolicies = [
        "dense", "snapkv(512)", "snapkv(256)", "think(0.5)", "think(0.8)",
        "spark(0.5,none)", "spark(0.5,mean,signed)", "spark(0.5,mean,unsigned)", "spark(0.5,gaussian)", "spark(0.5,exponential)",
        "spark(0.7,none)", "spark(0.7,mean,signed)", "spark(0.7,mean,unsigned)", "spark(0.7,gaussian)", "spark(0.7,exponential)",
        "spark(0.8,none)", "spark(0.8,mean,signed)", "spark(0.8,mean,unsigned)", "spark(0.8,gaussian)", "spark(0.8,exponential)",
        "snapkv(512)+spark(0.5)", "snapkv(512)+spark(0.8)", "spark(0.5)+vprune(0.5)",
    ]

    func validate() throws {
        guard scored >= 1 else { throw ValidationError("--scored must be at least 1") }
        guard greedyTokens >= 0 else { throw ValidationError("--greedy-tokens must be >= 0") }
        guard trials >= 0 else { throw ValidationError("--trials must be >= 0") }
        try ModelArguments.validateThreads(threads)
    }

    func run() throws { try runReportingUsage(execute) }

    private func execute() throws {
        var policies = try (self.policies.isEmpty ? Self.defaultPolicies : self.policies).map {
            try ModelArguments.parsePolicy($0, flag: "--policies")
        }
        if let threads {
            try LlamaModel.setThreads(threads)
            for i in policies.indices { policies[i].threads = threads }
        }
        if policies.first != .dense { policies.insert(.dense, at: 0) }
        let prefixList = quick ? [1024] : try parseList(prefixes, "--prefixes")
        let scored = quick ? 64 : self.scored
        let greedyCount = quick ? 16 : greedyTokens
        let passkeyList = quick ? [1024] : try parseList(passkeyLengths, "--passkey-lengths")
        let trials = quick ? 4 : self.trials

        let llama = try ModelArguments.openModel(model)
        let tokenizer = try Tokenizer(gguf: llama.file)
        let text = try ModelArguments.readText(self.text, flag: "--text")
        let context = llama.config.contextLength
        for p in prefixList where p > context || scored > llama.config.maxPositions - p {
            throw ValidationError("--prefixes \(p) with --scored \(scored) does not fit the model's context of \(context) tokens")
        }
        for length in passkeyList where length > context {
            throw ValidationError("--passkey-lengths \(length) is longer than the model's context of \(context) tokens")
        }
        if let p = prefixList.min(), greedyCount > llama.config.maxPositions - p {
            throw ValidationError("--greedy-tokens \(greedyCount) does not fit after a \(p)-token prefix")
        }
        for p in policies { _ = try ModelArguments.parsePolicy(p.description, flag: "--policies", headDim: llama.config.headDim) }
        var eval = Evaluation(model: llama, tokenizer: tokenizer)
        let available = tokenizer.encode(text, addSpecial: true).count
        // Units of progress are Evaluation's progress messages, one at the start of each piece of
        // work: per continuation prefix a dense prefill and each policy, per greedy run each
        // policy, per passkey trial one message.
        let continuationPrefixes = prefixList.filter { $0 + scored <= available }.count
        let greedyRuns = greedyCount > 0 && (prefixList.min() ?? .max) <= available ? 1 : 0
        let units = continuationPrefixes * (1 + policies.count) + greedyRuns * policies.count + passkeyList.count * trials
        let progress = ProgressBox(Progress(task: "eval", total: units))
        eval.progress = { message in progress.step(message) }
        defer { progress.finish() }
        var report = EvalReport(model: llama.displayName, text: self.text, textTokens: available)
        let clock = ContinuousClock(), start = clock.now
        for p in prefixList where p + scored <= available {
            report.continuation += try eval.continuation(text: text, prefix: p, scored: scored, policies: policies)
        }
        report.skippedPrefixes = prefixList.filter { $0 + scored > available }
        if greedyCount > 0, let p = prefixList.min(), p <= available {
            report.greedy = try eval.greedyAgreement(text: text, prefix: p, count: greedyCount, policies: policies)
        }
        for length in passkeyList {
            report.passkey += try eval.passkey(length: length, trials: trials, seed: seed, policies: policies)
        }
        report.seconds = seconds(clock.now - start)
        progress.finish()

        let table = report.table(policies: policies.map(\.description), prefixes: prefixList.filter { $0 + scored <= available },
                                 passkeyLengths: passkeyList)
        print(table.text)
        if let csv { try table.csv.write(toFile: csv, atomically: true, encoding: .utf8) }
        if let plot, let longest = report.continuation.map(\.prefixTokens).max() {
            var points = report.continuation.filter { $0.prefixTokens == longest && $0.policy != "dense" }.map {
                FrontierPlot.Point(label: $0.policy, bytes: $0.memory.ratioToDense, kl: $0.meanKL)
            }
            // llama.cpp's quantized KV caches on this model (f16 cache as reference; logits at 128
            // positions after a 1920-token GPL-3 prefix; measured by the author)
            points += [FrontierPlot.Point(label: "llama.cpp q8_0 (reference)", bytes: 0.53, kl: 0.005, reference: true),
                       FrontierPlot.Point(label: "llama.cpp q4_0 (reference)", bytes: 0.28, kl: 0.067, reference: true)]
            let title = "\(llama.displayName): K+V bytes vs KL(dense || policy), P = \(longest), \(scored) scored tokens"
            try FrontierPlot(title: title, points: points).svg().write(toFile: plot, atomically: true, encoding: .utf8)
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
    }

    private func parseList(_ s: String, _ name: String) throws -> [Int] {
        let parts = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return try parts.map {
            guard let v = Int($0), v > 0 else { throw ValidationError("\(name): '\($0)' is not a positive integer") }
            return v
        }
    }
}

/// Everything `sparkv eval` measured.
struct EvalReport: Codable {
    var model: String
    var text: String
    var textTokens: Int
    var continuation: [Evaluation.ContinuationResult] = []
    var skippedPrefixes: [Int] = []
    var greedy: [Evaluation.GreedyResult] = []
    var passkey: [Evaluation.PasskeyResult] = []
    var seconds: Double = 0

    /// One row per policy: bytes (from the longest prefix), then each metric.
    func table(policies: [String], prefixes: [Int], passkeyLengths: [Int]) -> (text: String, csv: String) {
        var header = ["policy", "K %", "K meta %", "V %", "total %", "end %"]
        for p in prefixes { header += ["dNLL@\(p)", "top1@\(p)", "KL@\(p)"] }
        if !greedy.isEmpty { header += ["greedy prefix", "greedy all"] }
        for l in passkeyLengths { header += ["passkey@\(l)"] }
        var rows: [[String]] = []
        for policy in policies {
            var row = [policy]
            let longest = continuation.filter { $0.policy == policy }.max { $0.prefixTokens < $1.prefixTokens }
            if let m = longest?.memory, m.denseBytes > 0 {
                let d = Double(m.denseBytes)
                row += [pct(Double(m.keyBytes) / d), pct(Double(m.keyMetaBytes) / d),
                        pct(Double(m.valueBytes + m.valueMetaBytes) / d), pct(m.ratioToDense)]
            } else { row += ["-", "-", "-", "-"] }
            if let e = longest?.endMemory, e.denseBytes > 0 { row.append(pct(e.ratioToDense)) } else { row.append("-") }
            for p in prefixes {
                if let r = continuation.first(where: { $0.policy == policy && $0.prefixTokens == p }) {
                    row += [String(format: "%+.4f", r.deltaNLL), String(format: "%.3f", r.top1Agreement),
                            String(format: "%.4f", r.meanKL)]
                } else { row += ["-", "-", "-"] }
            }
            if !greedy.isEmpty {
                if let g = greedy.first(where: { $0.policy == policy }) {
                    row += ["\(g.matchingPrefix)/\(g.generated)", "\(g.matchingOverall)/\(g.generated)"]
                } else { row += ["-", "-"] }
            }
            for l in passkeyLengths {
                if let r = passkey.first(where: { $0.policy == policy && $0.length == l }) {
                    row.append("\(r.correct)/\(r.trials)")
                } else { row.append("-") }
            }
            rows.append(row)
        }
        var text = textTable([header] + rows)
        text += "\n\nbytes: % of a dense fp16 cache of the same prompt (P = \(prefixes.max() ?? 0)); end: after the scored "
            + "tokens were appended (decode(R) policies compress them as they age); dNLL: mean NLL minus dense's "
            + "(nats/token); top1: argmax agreement with dense; KL: mean KL(dense||policy); greedy: tokens equal to dense's "
            + "up to the first divergence / overall; passkey: correct/trials. \(textTokens) tokens of text; "
            + String(format: "%.0f s.", seconds)
        let csv = ([header] + rows).map { $0.map { "\"\($0)\"" }.joined(separator: ",") }.joined(separator: "\n") + "\n"
        return (text, csv)
    }
}

private func pct(_ x: Double) -> String { String(format: "%.1f", 100 * x) }
