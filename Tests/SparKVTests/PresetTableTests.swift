// PresetTableTests.swift — the Swift presets against the language-neutral preset table
// (Tests/presets.json, also read by python/tests/test_presets.py): every preset converts to exactly
// the table's C sparkv_policy, the table's defaults are sparkv_default_policy(), its enum values are
// the header's, and every preset is a valid policy.

import CSparKV
import Foundation
import SparKV
import Testing

/// The table, read once from Tests/presets.json next to this file's folder.
enum PresetTable {
    static let url = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("presets.json")

    /// The parsed file (read on each use: it is small, and [String: Any] cannot be a shared constant).
    static var json: [String: Any] {
        do {
            let data = try Data(contentsOf: url)
            return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? ["error": "not a JSON object"]
        } catch {
            return ["error": "\(url.path): \(error)"]
        }
    }

    static var defaults: [String: Any] { json["defaults"] as? [String: Any] ?? [:] }
    static var enums: [String: [String: Int]] { json["enums"] as? [String: [String: Int]] ?? [:] }
    static var entries: [PresetEntry] {
        (json["presets"] as? [[String: Any]] ?? []).enumerated().map { PresetEntry(index: $0, raw: $1) }
    }

    /// A table value as the number its C field holds (enum names through the table's enums).
    static func cNumber(_ field: String, _ value: Any) -> Double? {
        if let names = enums[field] {
            guard let name = value as? String, let v = names[name] else { return nil }
            return Double(v)
        }
        return (value as? NSNumber)?.doubleValue
    }

    /// Every field of the expected C policy (defaults overlaid with the entry's fields), as numbers;
    /// float fields rounded to Float as the C struct holds them.
    static func expected(_ fields: [String: Any], floatFields: Set<String>) -> [String: Double] {
        var all = defaults
        for (k, v) in fields { all[k] = v }
        var out: [String: Double] = [:]
        for (k, v) in all {
            guard let d = cNumber(k, v) else { continue }
            out[k] = floatFields.contains(k) ? Double(Float(d)) : d
        }
        return out
    }
}

/// One row of the table.
struct PresetEntry: CustomStringConvertible, Sendable {
    let index: Int
    let preset: String
    let only: String?
    let args: [String: String]          // values as JSON text, parsed per argument
    let withPrecision: [String: String]?
    let fieldsJSON: String

    var description: String {
        let a = args.keys.sorted().map { "\($0)=\(args[$0]!)" }.joined(separator: ",")
        let w = withPrecision.map { m in "+with_precision(" + m.keys.sorted().map { "\($0)=\(m[$0]!)" }.joined(separator: ",") + ")" } ?? ""
        return "#\(index) \(preset)(\(a))\(w)"
    }
}

extension PresetEntry {
    init(index: Int, raw: [String: Any]) {
        func text(_ v: Any) -> String {
            if let s = v as? String { return s }
            if let n = v as? NSNumber { return n.stringValue }
            return "\(v)"
        }
        self.index = index
        preset = raw["preset"] as? String ?? "?"
        only = raw["only"] as? String
        args = (raw["args"] as? [String: Any] ?? [:]).mapValues(text)
        withPrecision = (raw["with_precision"] as? [String: Any])?.mapValues(text)
        let fields = raw["fields"] as? [String: Any] ?? [:]
        fieldsJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: fields)) ?? Data("{}".utf8), as: UTF8.self)
    }

    var fields: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(fieldsJSON.utf8)) as? [String: Any]) ?? [:]
    }

    struct BadArgument: Error, CustomStringConvertible {
        var description: String
    }

    /// The Swift preset this row names, with its arguments (an unknown preset or argument throws:
    /// a row for Swift must be fully understood).
    func build() throws -> CompressionPolicy {
        var used = Set<String>()
        func arg(_ name: String) -> String? {
            used.insert(name)
            return args[name]
        }
        func need(_ name: String) throws -> String {
            guard let v = arg(name) else { throw BadArgument(description: "\(self): missing argument \(name)") }
            return v
        }
        func float(_ name: String) throws -> Float {
            guard let v = Float(try need(name)) else { throw BadArgument(description: "\(self): \(name) is not a number") }
            return v
        }
        func int(_ name: String) throws -> Int {
            guard let v = Int(try need(name)) else { throw BadArgument(description: "\(self): \(name) is not an integer") }
            return v
        }
        func recovery() throws -> CompressionPolicy.Recovery {
            guard let s = arg("recovery") else { return .mean }
            guard let r = CompressionPolicy.Recovery(rawValue: s) else { throw BadArgument(description: "\(self): recovery \(s)") }
            return r
        }
        func precision(_ s: String) throws -> CompressionPolicy.Precision {
            guard let p = CompressionPolicy.Precision(rawValue: s) else { throw BadArgument(description: "\(self): precision \(s)") }
            return p
        }
        func optionalInt(_ name: String, _ fallback: Int) throws -> Int { arg(name) == nil ? fallback : try int(name) }

        var policy: CompressionPolicy
        switch preset {
        case "dense":
            policy = .dense
        case "spark":
            let signBits: Bool? = try arg("sign_bits").map {
                // a JSON boolean reads back as "true"/"false" or "1"/"0" depending on the Foundation
                switch $0 {
                case "true", "1": return true
                case "false", "0": return false
                default: throw BadArgument(description: "\(self): sign_bits \($0)")
                }
            }
            policy = .spark(ratio: try float("ratio"), recovery: try recovery(), signBits: signBits)
        case "snapkv":
            policy = .snapKV(budget: try int("budget"), poolKernel: try optionalInt("pool_kernel", 5))
        case "pyramidkv":
            policy = .pyramidKV(meanBudget: try int("budget"), ratio: arg("ratio") == nil ? 4 : try float("ratio"),
                                poolKernel: try optionalInt("pool_kernel", 5))
        case "streaming":
            policy = .streamingLLM(sinks: try int("sinks"), recent: try int("recent"))
        case "think":
            policy = .think(ratio: try float("ratio"))
        case "snap_spark":
            policy = .snapSpark(budget: try int("budget"), ratio: try float("ratio"), recovery: try recovery(),
                                poolKernel: try optionalInt("pool_kernel", 5))
        case "quantized":
            policy = .quantized(keys: try precision(try need("keys")), values: try precision(try need("values")),
                                group: try optionalInt("group", 32))
        default:
            throw BadArgument(description: "\(self): Swift has no preset \(preset)")
        }
        let unused = Set(args.keys).subtracting(used)
        if !unused.isEmpty { throw BadArgument(description: "\(self): Swift's preset takes no \(unused.sorted())") }
        if let w = withPrecision {
            let unknown = Set(w.keys).subtracting(["keys", "values", "group"])
            if !unknown.isEmpty { throw BadArgument(description: "\(self): with_precision takes no \(unknown.sorted())") }
            policy = policy.withPrecision(keys: try w["keys"].map(precision), values: try w["values"].map(precision),
                                          group: try w["group"].map {
                                              guard let g = Int($0) else { throw BadArgument(description: "\(self): group \($0)") }
                                              return g
                                          })
        }
        return policy
    }
}

/// Every field of a C policy but struct_size, by its C name, as a number (enums by raw value), read
/// with Mirror so that a field added to the C struct shows up here without a code change.
func cFields(_ c: sparkv_policy) -> [String: Double] {
    var out: [String: Double] = [:]
    for child in Mirror(reflecting: c).children {
        guard let label = child.label, label != "struct_size" else { continue }
        out[label] = number(child.value)
    }
    return out
}

func number(_ value: Any) -> Double {
    switch value {
    case let v as Float: return Double(v)
    case let v as Double: return v
    case let v as Int32: return Double(v)
    case let v as UInt32: return Double(v)
    case let v as UInt64: return Double(v)
    case let v as Int64: return Double(v)
    case let v as Int: return Double(v)
    default:
        // An imported C enum: a struct whose one stored property is rawValue.
        if let raw = Mirror(reflecting: value).children.first(where: { $0.label == "rawValue" })?.value {
            return number(raw)
        }
        return .nan
    }
}

func floatFields() -> Set<String> {
    Set(Mirror(reflecting: sparkv_default_policy()).children.compactMap { $0.value is Float ? $0.label : nil })
}

func cFieldNames() -> [String] {
    Mirror(reflecting: sparkv_default_policy()).children.compactMap(\.label).filter { $0 != "struct_size" }
}

@Suite("Preset table (Tests/presets.json)")
struct PresetTableTests {
    static let entries = PresetTable.entries
    static let swiftEntries = entries.filter { $0.only == nil || $0.only == "swift" }

    @Test("the table is readable and lists every C policy field as a default")
    func tableCoversEveryCField() {
        #expect(PresetTable.json["error"] == nil, "\(PresetTable.json["error"] ?? "")")
        #expect(Set(PresetTable.defaults.keys) == Set(cFieldNames()))
        #expect(Self.entries.count >= 20)
        #expect(Self.swiftEntries.count >= 20)
        for e in Self.entries {
            let unknown = Set(e.fields.keys).subtracting(PresetTable.defaults.keys)
            #expect(unknown.isEmpty, "\(e): unknown fields \(unknown.sorted())")
            #expect(e.only == nil || e.only == "python" || e.only == "swift", "\(e): only \(e.only ?? "")")
        }
    }

    @Test("the table's defaults are sparkv_default_policy(), and CompressionPolicy() converts to them")
    func defaultsAreTheCDefaultPolicy() throws {
        let want = PresetTable.expected([:], floatFields: floatFields())
        #expect(want.count == cFieldNames().count)
        #expect(cFields(sparkv_default_policy()) == want)
        #expect(cFields(try CompressionPolicy().cPolicy()) == want)
    }

    @Test("the table's enum values are the header's")
    func enumsAreTheHeaders() {
        let header: [String: [String: UInt32]] = [
            "selection": ["topk": SPARKV_SELECT_TOPK.rawValue, "cumulative": SPARKV_SELECT_CUMULATIVE.rawValue],
            "recovery": ["none": SPARKV_RECOVER_NONE.rawValue, "mean": SPARKV_RECOVER_MEAN.rawValue,
                         "gaussian": SPARKV_RECOVER_GAUSSIAN.rawValue, "exponential": SPARKV_RECOVER_EXPONENTIAL.rawValue],
            "key_precision": ["f32": SPARKV_F32.rawValue, "f16": SPARKV_F16.rawValue, "bf16": SPARKV_BF16.rawValue,
                              "i8": SPARKV_I8.rawValue, "i4": SPARKV_I4.rawValue],
            "eviction": ["none": SPARKV_EVICT_NONE.rawValue, "snapkv": SPARKV_EVICT_SNAPKV.rawValue,
                         "pyramidkv": SPARKV_EVICT_PYRAMIDKV.rawValue, "streaming": SPARKV_EVICT_STREAMING.rawValue],
            "key_pruning": ["spark": SPARKV_KEYS_SPARK.rawValue, "think": SPARKV_KEYS_THINK.rawValue],
        ]
        var table = PresetTable.enums
        #expect(table["value_precision"] == table["key_precision"])
        table["value_precision"] = nil
        #expect(table.mapValues { $0.mapValues(UInt32.init) } == header)
    }

    @Test("every Swift preset converts to the table's C policy", arguments: swiftEntries)
    func presetBuildsTheTablePolicy(_ entry: PresetEntry) throws {
        let policy = try entry.build()
        let got = cFields(try policy.cPolicy())
        let want = PresetTable.expected(entry.fields, floatFields: floatFields())
        let diff = want.keys.sorted().filter { got[$0] != want[$0] }.map { "\($0): got \(got[$0] ?? .nan), table \(want[$0]!)" }
        #expect(diff.isEmpty, "\(entry): \(diff.joined(separator: "; "))")
        #expect(got.count == want.count)
    }

    @Test("every Swift preset of the table is a valid policy", arguments: swiftEntries)
    func presetIsValid(_ entry: PresetEntry) throws {
        try entry.build().validate(headDim: 128)
    }
}
