import ArgumentParser
import Foundation
import SparKV

/// `sparkv policy`: build or check a compression policy and print it as JSON with its key cost.
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Build a compression policy from flags (or read one from a JSON file), validate it, print it as JSON.",
        discussion: """
            Examples:
              sparkv policy --ratio 0.8                      # SparK r = 0.8, MEAN recovery, sign bits, f16
              sparkv policy --ratio 0.5 --recovery gaussian --seed 7
              sparkv policy --file my-policy.json --head-dim 64
            The JSON is what CompressionPolicy encodes and decodes (keys are the C field names).
            """
    )

    @Option(help: "Read the policy from this JSON file instead of the flags below.")
    var file: String?

    @Option(help: "Head dimension D to validate against.")
    var headDim = 128

    @Option(help: "Fraction of key channels pruned per token, in [0, 1).")
    var ratio: Float = 0

    @Option(help: "Recovery of pruned entries: none, mean, gaussian, exponential.")
    var recovery: CompressionPolicy.Recovery = .mean

    @Flag(inversion: .prefixedNo, help: "Store sign bits of pruned channels (default: yes unless --recovery none).")
    var signBits: Bool?

    @Option(help: "Precision of kept keys: f32, f16, bf16.")
    var keyPrecision: CompressionPolicy.Precision = .f16

    @Option(help: "Precision of values: f32, f16, bf16.")
    var valuePrecision: CompressionPolicy.Precision = .f16

    @Option(help: "Observation-window queries.")
    var window = 32

    @Option(help: "Seed of the Gaussian/exponential recovery draws.")
    var seed: UInt64 = 0

    func run() throws {
        let policy: CompressionPolicy
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read \(file)")
            }
            policy = try JSONDecoder().decode(CompressionPolicy.self, from: data)
        } else {
            var p = CompressionPolicy.spark(ratio: ratio, recovery: recovery, signBits: signBits)
            p.keyPrecision = keyPrecision
            p.valuePrecision = valuePrecision
            p.window = window
            p.seed = seed
            policy = p
        }
        try policy.validate(headDim: headDim)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(policy), as: UTF8.self))
        if let bytes = policy.promptKeyBytesPerToken(headDim: headDim) {
            printError("key bytes per prompt token and KV head at D = \(headDim): \(bytes) "
                       + "(dense fp16: \(headDim * 2))")
        }
    }
}
