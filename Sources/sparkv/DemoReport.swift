import Foundation
import SparKV

/// Everything `sparkv demo` measured; printed as a table or, with `--json`, as JSON.
struct DemoReport: Codable {
    struct Row: Codable {
        /// "dense", "spark r=0.5", ...
        var name: String
        var policy: CompressionPolicy
        /// The whole cache after prefill and decode.
        var memory: MemoryReport
        /// totalBytes / denseBytes * 100.
        var percentOfDense: Double
        /// Key bytes (data + mask/signs/statistics) of one prompt token of one KV head, measured
        /// from the memory report after prefill (per-head query-norm metadata excluded).
        var keyBytesPerToken: Double
        /// The same from the policy's formula (nil for cumulative selection).
        var predictedKeyBytesPerToken: Int?
        /// Every byte count of the final report equals the formula's prediction.
        var matchesFormula: Bool
        /// Relative L2 error of each query head's attention output vs exact dense attention in
        /// double, over all query heads and layers of one decode query.
        var maxRelativeError: Double
        var meanRelativeError: Double

        enum CodingKeys: String, CodingKey {
            case name, policy, memory
            case percentOfDense = "percent_of_dense"
            case keyBytesPerToken = "key_bytes_per_token"
            case predictedKeyBytesPerToken = "predicted_key_bytes_per_token"
            case matchesFormula = "matches_formula"
            case maxRelativeError = "max_relative_error"
            case meanRelativeError = "mean_relative_error"
        }
    }

    var version: String
    var shape: ModelShape
    var promptTokens: Int
    var decodeTokens: Int
    var seed: UInt64
    var kernel: String
    /// Threads OpenMP uses: the --threads value, or OpenMP's default (OMP_NUM_THREADS or the cores).
    var threads: Int
    var threadsAreDefault: Bool
    var seconds: Double
    var rows: [Row]

    enum CodingKeys: String, CodingKey {
        case version, shape, seed, kernel, threads, seconds, rows
        case promptTokens = "prompt_tokens"
        case decodeTokens = "decode_tokens"
        case threadsAreDefault = "threads_are_openmp_default"
    }

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    func table() -> String {
        var lines: [String] = []
        lines.append("SparKV \(version) demo: synthetic Llama-shaped KV cache (SyntheticKV, seed \(seed))")
        lines.append("shape: layers \(shape.layers), query heads \(shape.queryHeads), KV heads \(shape.kvHeads), D \(shape.headDim); "
                     + "tokens per layer: \(promptTokens) prompt + \(decodeTokens) decode")
        lines.append("kernel: \(kernel), threads: \(threads)\(threadsAreDefault ? " (OpenMP default)" : "")")
        lines.append("")
        let header = ["policy", "K data B", "K meta B", "V B", "total B", "% dense", "K B/tok/head", "formula", "",
                      "max rel err", "mean rel err"]
        var cells = [header]
        for row in rows {
            let measured = row.keyBytesPerToken == row.keyBytesPerToken.rounded()
                ? String(Int(row.keyBytesPerToken)) : String(format: "%.2f", row.keyBytesPerToken)
            cells.append([
                row.name, grouped(row.memory.keyBytes), grouped(row.memory.keyMetaBytes), grouped(row.memory.valueBytes),
                grouped(row.memory.totalBytes), String(format: "%.1f%%", row.percentOfDense), measured,
                row.predictedKeyBytesPerToken.map(String.init) ?? "-", row.matchesFormula ? "✓" : "MISMATCH",
                String(format: "%.2e", row.maxRelativeError), String(format: "%.2e", row.meanRelativeError),
            ])
        }
        lines.append(textTable(cells))
        lines.append("")
        lines.append("% dense: total bytes vs the same tokens in dense fp16 K and V. K B/tok/head: key bytes of one prompt token")
        lines.append("of one KV head (kept values + mask + sign bits + statistics); formula: T*2 + D/8 + D/8 + 2*stats.")
        lines.append("rel err: |out - exact| / |exact| per query head, one decode query, exact = dense attention in double from")
        lines.append("the original f32 keys and values.")
        lines.append(String(format: "time: %.2f s", seconds))
        return lines.joined(separator: "\n")
    }

    private func grouped(_ n: Int) -> String {
        let digits = String(n)
        var out = ""
        for (i, ch) in digits.enumerated() {
            if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return out
    }
}
