import ArgumentParser
import Foundation
import SparKV

/// `sparkv policy`: build or check a compression policy and print it as JSON with its cost.
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Build a compression policy from its compact form, flags or a JSON file; validate it; print it as JSON.",
        discussion: """
            The policy starts from POLICY (compact form, default: dense) or --file, then the flags below \
            change it. It is validated by the C library against --head-dim and printed as JSON (keys are \
            the C field names: what CompressionPolicy encodes and decodes); its compact label and byte \
            costs go to standard error. --compact prints the compact form instead of the JSON.

            Examples:
              sparkv policy snapkv:512+spark:0.8
              sparkv policy 'pyramidkv(256,4)+spark(0.5,gaussian)' --head-dim 64
              sparkv policy --ratio 0.8 --eviction streaming --sinks 4 --recent 1020
              sparkv policy think:0.5 --compact
              sparkv policy --file my-policy.json --value-ratio 0.25

            Compact form:
            \(CompressionPolicy.compactGrammar)
            """
    )

    /// Eviction modes as flag values.
    enum EvictionMode: String, CaseIterable, ExpressibleByArgument {
        case none, snapkv, pyramidkv, streaming
    }

    @Argument(help: "The policy in compact form, e.g. snapkv:512+spark:0.8 (default: dense).")
    var policy: String?

    @Option(help: "Read the policy from this JSON file instead of POLICY.")
    var file: String?

    @Option(help: "Head dimension D to validate against and to compute byte costs with.")
    var headDim = 128

    @Option(help: "Token eviction: none, snapkv, pyramidkv, streaming.")
    var eviction: EvictionMode?

    @Option(help: "SnapKV budget, or PyramidKV mean budget, in prompt tokens (default 512).")
    var budget: Int?

    @Option(help: "SnapKV/PyramidKV pooling width, odd (default 5).")
    var poolKernel: Int?

    @Option(help: "PyramidKV first/last layer budget ratio, >= 1 (default 4).")
    var pyramidRatio: Float?

    @Option(help: "StreamingLLM sink tokens (default 4).")
    var sinks: Int?

    @Option(help: "StreamingLLM recent tokens (default 508).")
    var recent: Int?

    @Option(help: "Key pruning method: spark (per token, with recovery) or think (per head).")
    var keyPruning: CompressionPolicy.KeyPruning?

    @Option(help: "Fraction of key channels pruned, in [0, 1).")
    var ratio: Float?

    @Option(help: "Recovery of pruned key entries: none, mean, gaussian, exponential.")
    var recovery: CompressionPolicy.Recovery?

    @Flag(inversion: .prefixedNo, help: "Store sign bits of pruned channels (default: yes unless the recovery is none).")
    var signBits: Bool?

    @Option(help: "Fraction of value channels pruned, in [0, 1) (0 = off).")
    var valueRatio: Float?

    @Option(help: "Precision of kept keys: f32, f16, bf16, i8, i4.")
    var keyPrecision: CompressionPolicy.Precision?

    @Option(help: "Precision of values: f32, f16, bf16, i8, i4.")
    var valuePrecision: CompressionPolicy.Precision?

    @Option(help: "Observation-window queries.")
    var window: Int?

    @Option(help: "Seed of the Gaussian/exponential recovery draws.")
    var seed: UInt64?

    @Option(help: "OpenMP threads (the JSON's null means OpenMP's default).")
    var threads: Int?

    @Flag(help: "Print the compact form instead of the JSON.")
    var compact = false

    func validate() throws {
        if policy != nil && file != nil { throw ValidationError("give either POLICY or --file, not both") }
        let built = try build()
        do {
            try built.validate(headDim: headDim)
        } catch let error as SparKVError {
            throw ValidationError("invalid policy \(built): \(error.detail)")
        }
    }

    func run() throws {
        let policy = try build()
        if compact {
            print(policy.description)
        } else {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(policy), as: UTF8.self))
        }
        var summary = "policy: \(policy)"
        if let keyBytes = policy.promptKeyBytesPerToken(headDim: headDim) {
            summary += "\nper prompt token and KV head at D = \(headDim): \(keyBytes) key bytes, "
                + "\(policy.promptValueBytesPerToken(headDim: headDim) + policy.promptValueMetaBytesPerToken(headDim: headDim)) "
                + "value bytes (dense fp16: \(headDim * 2) each)"
        }
        printError(summary)
    }

    /// The policy from POLICY or --file, changed by the flags.
    func build() throws -> CompressionPolicy {
        var p: CompressionPolicy
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read \(file)")
            }
            p = try JSONDecoder().decode(CompressionPolicy.self, from: data)
        } else if let text = policy {
            do {
                p = try CompressionPolicy(parsing: text)
            } catch let error as SparKVError {
                throw ValidationError(error.detail)
            }
        } else {
            p = .dense
        }
        try applyEviction(to: &p)
        if let keyPruning {
            p.keyPruning = keyPruning
            if keyPruning == .think {
                p.recovery = .none
                p.signBits = false
            }
        }
        if let ratio { p.keyPruneRatio = ratio }
        if let recovery {
            p.recovery = recovery
            p.signBits = recovery != .none
        }
        if let signBits { p.signBits = signBits }
        if let valueRatio { p.valuePruneRatio = valueRatio }
        if let keyPrecision { p.keyPrecision = keyPrecision }
        if let valuePrecision { p.valuePrecision = valuePrecision }
        if let window { p.window = window }
        if let seed { p.seed = seed }
        if let threads { p.threads = threads }
        return p
    }

    /// --eviction chooses the mode; the parameter flags change the chosen (or current) mode's
    /// parameters, the others keep theirs (or the defaults).
    private func applyEviction(to p: inout CompressionPolicy) throws {
        var budget = 512, pool = 5, ratio: Float = 4, sinks = 4, recent = 508
        switch p.eviction {
        case .snapKV(let b, let k)?: (budget, pool) = (b, k)
        case .pyramidKV(let b, let r, let k)?: (budget, ratio, pool) = (b, r, k)
        case .streamingLLM(let s, let r)?: (sinks, recent) = (s, r)
        case nil: break
        }
        budget = self.budget ?? budget
        pool = poolKernel ?? pool
        ratio = pyramidRatio ?? ratio
        sinks = self.sinks ?? sinks
        recent = self.recent ?? recent
        let mode: EvictionMode
        if let eviction {
            mode = eviction
        } else {
            switch p.eviction {
            case .snapKV?: mode = .snapkv
            case .pyramidKV?: mode = .pyramidkv
            case .streamingLLM?: mode = .streaming
            case nil: mode = .none
            }
        }
        let scoring = self.budget != nil || poolKernel != nil
        switch mode {
        case .none:
            if scoring || pyramidRatio != nil || self.sinks != nil || self.recent != nil {
                throw ValidationError("eviction parameters need an eviction mode (--eviction or a POLICY term)")
            }
            p.eviction = nil
        case .snapkv:
            if pyramidRatio != nil || self.sinks != nil || self.recent != nil {
                throw ValidationError("--pyramid-ratio, --sinks and --recent do not apply to SnapKV")
            }
            p.eviction = .snapKV(budget: budget, poolKernel: pool)
        case .pyramidkv:
            if self.sinks != nil || self.recent != nil {
                throw ValidationError("--sinks and --recent do not apply to PyramidKV")
            }
            p.eviction = .pyramidKV(meanBudget: budget, ratio: ratio, poolKernel: pool)
        case .streaming:
            if scoring || pyramidRatio != nil {
                throw ValidationError("--budget, --pool-kernel and --pyramid-ratio do not apply to StreamingLLM")
            }
            p.eviction = .streamingLLM(sinks: sinks, recent: recent)
        }
    }
}

extension CompressionPolicy.KeyPruning: ExpressibleByArgument {}
