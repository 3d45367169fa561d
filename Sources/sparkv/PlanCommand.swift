import ArgumentParser
import Foundation
import SparKV

/// `sparkv plan`: how long a context, or how large a batch, fits in a memory budget under each
/// policy, from the library's exact byte formulas (no cache is built).
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Longest context or largest batch that fits in a memory budget, per policy, beside dense f16 and llama.cpp's q8_0/q4_0 caches.",
        discussion: """
            Answers from the exact byte formulas of the memory report (reserved bytes: pages as allocated); \
            nothing is built or run. Without --context: the longest prompt per sequence for --batch \
            sequences (default 1). With --context N: the largest batch of N-token prompts. Tokens \
            appended during decode (--generated) are stored dense in the policy's precisions.

              sparkv plan --shape llama3-8b --memory 16GiB
              sparkv plan --shape qwen2.5-1.5b --memory 4GiB --context 32768 --policy "spark:0.8+kprec(i8)+vprec(i8)"
            """
    )

    @Option(help: "Model shape: \(PlanShape.allCases.map(\.rawValue).joined(separator: ", ")).")
    var shape: PlanShape = .llama3_8b

    @Option(help: "Memory budget for the KV caches of all sequences: bytes, or with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB).")
    var memory: MemorySize

    @Option(name: .customLong("policy"), parsing: .singleValue,
            help: "A policy in compact form (repeatable; default: a representative set).")
    var policies: [String] = []

    @Option(help: "Prompt tokens per sequence: answer the largest batch instead of the longest context.")
    var context: Int?

    @Option(help: "Sequences sharing the budget when answering the longest context.")
    var batch: Int = 1

    @Option(help: "Tokens appended per sequence after the prompt (decode): stored dense, or compressed as they age under decode(R).")
    var generated: Int = 0

    @Option(help: "Capacity per sequence searched for the longest context (tokens).")
    var capacity: Int = 1 << 30

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    static let defaultPolicies = [
        "dense", "kprec(i8)+vprec(i8)", "spark:0.5", "spark:0.8", "spark:0.8+kprec(i8)+vprec(i8)",
        "snapkv:2048+spark:0.8", "think:0.5",
    ]

    struct Row: Codable {
        var policy: String
        var bytesPerToken: Double
        var ratioToDense: Double
        var maxContext: Int?
        var maxBatch: Int?
    }

    mutating func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard generated >= 0 else { throw ValidationError("--generated must not be negative") }
        if let context, context < 1 { throw ValidationError("--context must be at least 1") }
        guard (1...(1 << 40)).contains(capacity) else { throw ValidationError("--capacity must be in 1...\(1 << 40)") }
        if let context, context > (1 << 40) - generated {
            throw ValidationError("--context + --generated must be at most \(1 << 40) tokens")
        }
    }

    func run() throws {
        let capacity = max(self.capacity, (context ?? 0) + generated)
        let modelShape = shape.shape(capacity: capacity)
        let budget = memory.bytes
        // per-token figures are read at a fixed reference length so the rows compare
        let reference = context ?? 32_768
        var rows: [Row] = []
        let denseRef = MemoryPlan.llamaCppBytes(shape: modelShape, type: .f16, tokens: 1)
        for text in policies.isEmpty ? Self.defaultPolicies : policies {
            let policy = try CompressionPolicy(parsing: text)
            try policy.validate(headDim: modelShape.headDim)
            let perToken: Double
            if let m = try? MemoryPlan.memory(shape: modelShape, policy: policy, promptTokens: reference,
                                              appendedTokens: generated) {
                perToken = Double(m.reservedBytes) / Double(reference + generated)
            } else {
                perToken = .nan
            }
            var row = Row(policy: text, bytesPerToken: perToken, ratioToDense: perToken / Double(denseRef))
            if let context {
                row.maxBatch = try MemoryPlan.maxBatch(shape: modelShape, policy: policy, memoryBytes: budget,
                                                       promptTokens: context, appendedTokens: generated)
            } else {
                row.maxContext = try MemoryPlan.maxPromptTokens(shape: modelShape, policy: policy, memoryBytes: budget,
                                                                batch: batch, appendedTokens: generated) + generated
            }
            rows.append(row)
        }
        for type in MemoryPlan.LlamaCppCacheType.allCases {
            let perToken = Double(MemoryPlan.llamaCppBytes(shape: modelShape, type: type, tokens: 1))
            var row = Row(policy: "llama.cpp \(type.rawValue)", bytesPerToken: perToken,
                          ratioToDense: perToken / Double(denseRef))
            if let context {
                let per = MemoryPlan.llamaCppBytes(shape: modelShape, type: type, tokens: context + generated)
                row.maxBatch = per > 0 ? budget / per : 0
            } else {
                row.maxContext = MemoryPlan.llamaCppMaxTokens(shape: modelShape, type: type, memoryBytes: budget,
                                                              batch: batch)
            }
            rows.append(row)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(rows), as: UTF8.self))
            return
        }
        let what = context.map { "largest batch of \($0)-token prompts" }
            ?? "longest context per sequence, batch \(batch)"
        print("\(shape.rawValue): \(modelShape.layers) layers, \(modelShape.kvHeads) KV heads, D \(modelShape.headDim); "
              + "budget \(memory.text); \(what)" + (generated > 0 ? ", \(generated) generated tokens each (dense)" : ""))
        var table = [["policy", "bytes/token", "vs dense f16", context == nil ? "max context" : "max batch"]]
        for r in rows {
            let answer = r.maxContext ?? r.maxBatch ?? 0
            table.append([r.policy, r.bytesPerToken.isNaN ? "-" : String(format: "%.0f", r.bytesPerToken),
                          r.ratioToDense.isNaN ? "-" : String(format: "%.3f", r.ratioToDense),
                          answer == Int.max ? "unbounded" : "\(answer)"])
        }
        print(textTable(table))
        print("bytes/token: reserved bytes per token at \(reference) prompt tokens" + (generated > 0 ? " + \(generated) generated" : "")
              + " (SparKV pages as allocated; llama.cpp: K and V in ggml blocks, whole context allocated up front).")
        if context == nil {
            print("max context: capped at --capacity \(capacity) tokens; token eviction stops the growth of its policies' caches.")
        }
    }
}

/// Shapes the planner knows (attention layers only: what the KV cache stores).
enum PlanShape: String, CaseIterable, ExpressibleByArgument {
    case llama3_8b = "llama3-8b"
    case qwen25_1_5b = "qwen2.5-1.5b"
    case qwen25_7b = "qwen2.5-7b"
    case smollm2_135m = "smollm2-135m"

    func shape(capacity: Int) -> ModelShape {
        switch self {
        case .llama3_8b: return .llama3_8B(capacity: capacity)
        case .qwen25_1_5b: return ModelShape(layers: 28, queryHeads: 12, kvHeads: 2, headDim: 128, capacity: capacity)
        case .qwen25_7b: return ModelShape(layers: 28, queryHeads: 28, kvHeads: 4, headDim: 128, capacity: capacity)
        case .smollm2_135m: return .smolLM2_135M(capacity: capacity)
        }
    }
}

/// A byte count from the command line: "17179869184", "16GiB", "16 GB", "512MiB".
struct MemorySize: ExpressibleByArgument {
    var bytes: Int
    var text: String

    init?(argument: String) {
        let t = argument.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [
            ("KiB", 0x1p10), ("MiB", 0x1p20), ("GiB", 0x1p30), ("TiB", 0x1p40),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1),
        ]
        var scale = 1.0, number = t
        for (suffix, factor) in units where t.lowercased().hasSuffix(suffix.lowercased()) {
            scale = factor
            number = String(t.dropLast(suffix.count)).trimmingCharacters(in: .whitespaces)
            break
        }
        guard let value = Double(number), value.isFinite, value > 0, value * scale < 9.2e18 else { return nil }
        bytes = Int(value * scale)
        text = argument
    }
}
