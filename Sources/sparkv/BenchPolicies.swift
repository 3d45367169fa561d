import Foundation
import SparKV

/// The policies `sparkv bench` runs: short names for tables and `--policies`, each standing for
/// a policy in the compact form of ``CompressionPolicy/init(parsing:)``.
///
/// This is the one place to extend: add a line to ``catalog`` (and its name to ``defaultNames``
/// if it should run by default). `--policies` also takes any compact form directly
/// (`snapkv(256)+spark(0.5,gaussian)`), named by itself in the tables.
enum BenchPolicies {
    /// Short name -> compact policy form.
    static let catalog: [(name: String, spec: String)] = [
        ("dense-f32", "dense+kprec(f32)+vprec(f32)"),
        ("dense-f16", "dense"),
        ("dense-bf16", "dense+kprec(bf16)+vprec(bf16)"),
        ("think-0.5", "think(0.5)"),
        ("think-0.8", "think(0.8)"),
        ("spark-0.5-none", "spark(0.5,none)"),
        ("spark-0.5-mean", "spark(0.5,mean,signed)"),
        ("spark-0.5-gaussian", "spark(0.5,gaussian,signed)"),
        ("spark-0.5-exponential", "spark(0.5,exponential,signed)"),
        ("spark-0.8-none", "spark(0.8,none)"),
        ("spark-0.8-mean", "spark(0.8,mean,signed)"),
        ("spark-0.8-gaussian", "spark(0.8,gaussian,signed)"),
        ("spark-0.8-exponential", "spark(0.8,exponential,signed)"),
        ("snapkv-spark-0.8-mean", "snapkv(512)+spark(0.8,mean,signed)"),
        ("snapkv-512", "snapkv(512)"),
        ("spark-0.8-mean+vprune-0.5", "spark(0.8,mean,signed)+vprune(0.5)"),
    ]

    /// The default list, in table order.
    static let defaultNames = [
        "dense-f32", "dense-f16",
        "think-0.5", "think-0.8",
        "spark-0.5-none", "spark-0.5-mean", "spark-0.5-gaussian",
        "spark-0.8-none", "spark-0.8-mean", "spark-0.8-gaussian",
        "snapkv-spark-0.8-mean",
    ]

    /// The baseline every speed-up is measured against (added to a run when not listed).
    static let baseline = "dense-f16"

    /// The policy of a catalog name or of a compact form.
    static func policy(named name: String) throws -> CompressionPolicy {
        let spec = catalog.first { $0.name == name.lowercased() }?.spec ?? name
        do {
            return try CompressionPolicy(parsing: spec)
        } catch {
            throw BenchError("'\(name)' is neither a benchmark policy name (\(catalog.map(\.name).joined(separator: ", "))) "
                             + "nor a compact policy: \(error)")
        }
    }

    /// Splits a `--policies` value at commas outside parentheses.
    static func split(_ text: String) -> [String] {
        var items: [String] = [], current = "", depth = 0
        for ch in text {
            if ch == "(" { depth += 1 } else if ch == ")" { depth = max(0, depth - 1) }
            if ch == ",", depth == 0 {
                items.append(current)
                current = ""
            } else {
                current.append(ch)
            }
        }
        items.append(current)
        return items.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Resolves a `--policies` list (nil: the defaults) into policies, in order, with the baseline
    /// added first when missing. Throws for a name that is neither in the catalog nor a compact form.
    static func resolve(_ names: [String]?) throws -> [BenchPolicy] {
        // A compact form equal to a catalog policy takes the catalog's name ("dense" is dense-f16);
        // duplicates are dropped.
        let named = try catalog.map { (name: $0.name, policy: try CompressionPolicy(parsing: $0.spec)) }
        var policies: [BenchPolicy] = []
        for text in names ?? defaultNames {
            let p = try policy(named: text)
            let name = named.first { $0.policy == p }?.name ?? text
            if !policies.contains(where: { $0.name == name || $0.policy == p }) {
                policies.append(BenchPolicy(name: name, policy: p))
            }
        }
        if !policies.contains(where: { $0.name == baseline }) {
            policies.insert(BenchPolicy(name: baseline, policy: try policy(named: baseline)), at: 0)
        }
        return policies
    }
}

/// One benchmarked policy: its short name and the policy (threads still unset).
struct BenchPolicy {
    var name: String
    var policy: CompressionPolicy

    /// The policy with `threads` OpenMP threads.
    func with(threads: Int) -> CompressionPolicy {
        var p = policy
        p.threads = threads
        return p
    }
}
