// PolicyGrammarTests.swift — CompressionPolicy(parsing:) and description against the
// language-neutral grammar table (Tests/policy-grammar.json, also read by
// python/tests/test_compact.py): every text parses to exactly the table's C sparkv_policy and
// writes back in its canonical compact form; every rejected text fails with the table's message.

import CSparKV
import Foundation
import SparKV
import Testing

/// The rows of one list of Tests/policy-grammar.json (none when the file cannot be read: the
/// tests that count rows then fail).
private func grammarRows(_ list: String) -> [[String: Any]] {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("policy-grammar.json")
    guard let data = try? Data(contentsOf: url),
          let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [] }
    return json[list] as? [[String: Any]] ?? []
}

/// One row of the table's "parse" or "reject" list.
struct GrammarCase: CustomStringConvertible, Sendable {
    let text: String
    let compact: String?
    let error: String?
    let fieldsJSON: String

    var description: String { "\"\(text)\"" }
    var fields: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(fieldsJSON.utf8)) as? [String: Any]) ?? [:]
    }

    static func load(_ list: String) -> [GrammarCase] {
        grammarRows(list).map { row in
            let fields = row["fields"] as? [String: Any] ?? [:]
            let text = (try? JSONSerialization.data(withJSONObject: fields)).map { String(decoding: $0, as: UTF8.self) }
            return GrammarCase(text: row["text"] as? String ?? "", compact: row["compact"] as? String,
                               error: row["error"] as? String, fieldsJSON: text ?? "{}")
        }
    }
}

/// One row of the table's "json" or "partial_json" list: a JSON document and its policy's compact form.
struct JSONCase: CustomStringConvertible, Sendable {
    let compact: String
    let json: String

    var description: String { compact }

    static func load(_ list: String) -> [JSONCase] {
        grammarRows(list).compactMap { row in
            guard let compact = row["compact"] as? String, let doc = row["json"],
                  let text = try? JSONSerialization.data(withJSONObject: doc) else { return nil }
            return JSONCase(compact: compact, json: String(decoding: text, as: UTF8.self))
        }
    }
}

@Suite("Compact policy grammar (Tests/policy-grammar.json)")
struct PolicyGrammarTests {
    static let parsed = GrammarCase.load("parse")
    static let rejected = GrammarCase.load("reject")

    @Test("the table is readable")
    func tableIsReadable() {
        #expect(Self.parsed.count >= 20)
        #expect(Self.rejected.count >= 20)
    }

    @Test("each text parses to the table's C policy and writes back in its compact form", arguments: parsed)
    func textParsesToTheTablePolicy(_ row: GrammarCase) throws {
        let policy = try CompressionPolicy(parsing: row.text)
        let got = cFields(try policy.cPolicy())
        let want = PresetTable.expected(row.fields, floatFields: floatFields())
        let diff = want.keys.sorted().filter { got[$0] != want[$0] }.map { "\($0): got \(got[$0] ?? .nan), table \(want[$0]!)" }
        #expect(diff.isEmpty, "\(row): \(diff.joined(separator: "; "))")
        #expect(policy.description == row.compact, "\(row)")
        #expect(try CompressionPolicy(parsing: policy.description) == policy, "\(row): the compact form round-trips")
    }

    static let documents = JSONCase.load("json")
    static let partialDocuments = JSONCase.load("partial_json")

    @Test("each policy encodes to the table's JSON and decodes back (the form Python's to_json/from_json use)",
          arguments: documents)
    func jsonIsTheTables(_ row: JSONCase) throws {
        #expect(Self.documents.count >= 5)
        let policy = try CompressionPolicy(parsing: row.compact)
        let encoded = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(policy)) as? NSDictionary
        let table = try JSONSerialization.jsonObject(with: Data(row.json.utf8)) as? NSDictionary
        #expect(encoded == table, "\(row)")
        #expect(try JSONDecoder().decode(CompressionPolicy.self, from: Data(row.json.utf8)) == policy)
    }

    @Test("JSON listing only some keys decodes with the others at their defaults", arguments: partialDocuments)
    func partialJSONTakesTheDefaults(_ row: JSONCase) throws {
        #expect(try JSONDecoder().decode(CompressionPolicy.self, from: Data(row.json.utf8)).description == row.compact)
    }

    @Test("each rejected text fails with the table's message", arguments: rejected)
    func textIsRejected(_ row: GrammarCase) {
        do {
            let policy = try CompressionPolicy(parsing: row.text)
            Issue.record("\(row) parsed to \(policy)")
        } catch SparKVError.invalidPolicy(let message) {
            #expect(message.contains(row.error ?? "?"), "\(row): \(message)")
        } catch {
            Issue.record("\(row): \(error)")
        }
    }
}
